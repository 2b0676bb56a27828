# Python 3.11 (the conformance suite runs on the guest) and the Windows
# debugging tools (cdb, to run !analyze on crash dumps in the guest).
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$work = 'C:\wfp\installers'
New-Item -ItemType Directory -Force -Path $work | Out-Null

function Assert-Signed([string]$path, [string]$subjectPattern) {
    $sig = Get-AuthenticodeSignature -FilePath $path
    if ($sig.Status -ne 'Valid' -or $sig.SignerCertificate.Subject -notmatch $subjectPattern) {
        throw "$path is not validly signed by $subjectPattern ($($sig.Status))"
    }
}

# --- Python 3.11 for all users, on PATH -----------------------------------
$python = Join-Path $work 'python-3.11-amd64.exe'
Invoke-WebRequest -Uri $env:WFP_PYTHON_URL -OutFile $python -UseBasicParsing
$hash = (Get-FileHash -Algorithm SHA256 -Path $python).Hash
if ($hash -ne $env:WFP_PYTHON_SHA256.ToUpperInvariant()) {
    throw "Python installer SHA-256 $hash does not match the expected $($env:WFP_PYTHON_SHA256)"
}
Assert-Signed $python 'Python Software Foundation'
$p = Start-Process -FilePath $python -Wait -PassThru -ArgumentList `
    '/quiet', 'InstallAllUsers=1', 'PrependPath=1', 'Include_test=0', 'Include_launcher=1', `
    'TargetDir=C:\Python311'
if ($p.ExitCode -ne 0) { throw "Python setup failed: $($p.ExitCode)" }
& C:\Python311\python.exe -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version"
if ($LASTEXITCODE -ne 0) { throw 'Python 3.11 not usable after install' }
& C:\Python311\python.exe -m pip install --upgrade pip
if ($LASTEXITCODE -ne 0) { throw 'pip upgrade failed' }

# --- Debugging Tools for Windows (only this SDK feature) ------------------
$sdk = Join-Path $work 'winsdksetup.exe'
Invoke-WebRequest -Uri $env:WFP_WINSDK_URL -OutFile $sdk -UseBasicParsing
Assert-Signed $sdk 'Microsoft Corporation'
$p = Start-Process -FilePath $sdk -Wait -PassThru -ArgumentList `
    '/features', 'OptionId.WindowsDesktopDebuggers', '/quiet', '/norestart', '/log', "$work\winsdk.log"
if ($p.ExitCode -notin 0, 3010) { throw "Windows SDK debuggers setup failed: $($p.ExitCode)" }
$cdb = 'C:\Program Files (x86)\Windows Kits\10\Debuggers\x64\cdb.exe'
if (-not (Test-Path $cdb)) { throw "cdb.exe not found at $cdb" }
[Environment]::SetEnvironmentVariable('WFP_CDB', $cdb, 'Machine')

Remove-Item -Recurse -Force $work
