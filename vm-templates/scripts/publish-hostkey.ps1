# Publish the SSH host key so the orchestrator can pin it instead of
# trusting on first use (paramiko's default RejectPolicy; docs/sources.md):
#   C:\wfp\hostkey.pub          - the ed25519 public host key (read over
#                                 VMware Tools guest operations)
#   guestinfo.wfp.hostkey       - the same line, set through VMware Tools'
#                                 rpctool for tools that read guestinfo
# Every clone of the template shares this key: pin it per template.
$ErrorActionPreference = 'Stop'
$pub = "$env:ProgramData\ssh\ssh_host_ed25519_key.pub"
if (-not (Test-Path $pub)) { throw "$pub not found (sshd never generated its keys?)" }
$line = (Get-Content $pub -Raw).Trim()
if ($line -notmatch '^ssh-ed25519 [A-Za-z0-9+/=]+') { throw "unexpected host key format: $line" }

New-Item -ItemType Directory -Force -Path C:\wfp | Out-Null
Set-Content -Path C:\wfp\hostkey.pub -Value $line -Encoding ascii -NoNewline

$rpctool = "$env:ProgramFiles\VMware\VMware Tools\rpctool.exe"
if (-not (Test-Path $rpctool)) { throw "rpctool.exe not found; is VMware Tools installed?" }
& $rpctool "info-set guestinfo.wfp.hostkey $line"
if ($LASTEXITCODE -ne 0) { throw "rpctool info-set failed ($LASTEXITCODE)" }
$back = & $rpctool 'info-get guestinfo.wfp.hostkey'
if ($back.Trim() -ne $line) { throw 'guestinfo.wfp.hostkey did not read back' }
Write-Output "host key published: $line"
