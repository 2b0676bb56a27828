# After the reboot: fail the build unless the guest is what the orchestrator
# expects of a template (README "What the orchestrator expects").
$ErrorActionPreference = 'Stop'
$problems = @()

$bcd = bcdedit.exe /enum '{current}' | Out-String
if ($bcd -notmatch '(?mi)^testsigning\s+Yes') { $problems += 'test signing is not on' }
try { if (Confirm-SecureBootUEFI) { $problems += 'Secure Boot is on' } } catch { }

$crash = Get-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control\CrashControl'
if ($crash.CrashDumpEnabled -ne 2) { $problems += "CrashDumpEnabled is $($crash.CrashDumpEnabled), expected 2" }
$ramMb = (Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory / 1MB
$page = Get-CimInstance Win32_PageFileUsage | Where-Object Name -like 'C:\pagefile.sys'
if (-not $page -or $page.AllocatedBaseSize -lt $ramMb) { $problems += 'page file smaller than RAM' }

if (-not (Test-Path "$env:SystemRoot\System32\PktMon.exe")) { $problems += 'pktmon missing' }
& "$env:SystemRoot\System32\PktMon.exe" status | Out-Null
if ($LASTEXITCODE -ne 0) { $problems += "pktmon status failed ($LASTEXITCODE)" }

if (-not (Test-Path 'C:\Program Files (x86)\Windows Kits\10\Debuggers\x64\cdb.exe')) {
    $problems += 'cdb.exe missing'
}
& C:\Python311\python.exe --version
if ($LASTEXITCODE -ne 0) { $problems += 'python 3.11 missing' }

if ((Get-Service sshd).Status -ne 'Running') { $problems += 'sshd not running' }
$sshd = Get-Content "$env:ProgramData\ssh\sshd_config" -Raw
if ($sshd -notmatch '(?m)^PasswordAuthentication no') { $problems += 'sshd allows passwords' }
if ((Get-Service vmtools -ErrorAction SilentlyContinue).Status -ne 'Running') { $problems += 'VMware Tools not running' }

if ($problems) { throw ('template check failed: ' + ($problems -join '; ')) }
Write-Output 'template check passed'
