"""python -m harness.proxy_service ..."""
import sys

from harness.proxy_service.cli import main

sys.exit(main())
