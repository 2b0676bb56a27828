# What a driver test guest needs before the reboot: test signing, kernel
# crash dumps (and minidumps) with a page file big enough to hold them, and
# a check that pktmon is there (built into Windows 10 1809+ / Server 2019+).
$ErrorActionPreference = 'Stop'

# Secure Boot must be off, or bcdedit refuses testsigning (appveyor/ci #919, vmware/ansible-vsphere-gos-validation #164; docs/sources.md).
$secureBoot = $false
try { $secureBoot = Confirm-SecureBootUEFI } catch [System.PlatformNotSupportedException] { $secureBoot = $false }
if ($secureBoot) { throw 'Secure Boot is on: build the template with firmware = "efi", not "efi-secure"' }

bcdedit.exe /set '{current}' testsigning on
if ($LASTEXITCODE -ne 0) { throw "bcdedit testsigning failed: $LASTEXITCODE" }
# Keep the kernel debugger transport off but boot-time driver logging on.
bcdedit.exe /set '{current}' bootlog yes | Out-Null

# --- crash dumps ------------------------------------------------------------
# CrashDumpEnabled 2 = kernel memory dump (driver bugs need kernel memory,
# not user pages); minidumps are written too, for quick triage.
$crash = 'HKLM:\SYSTEM\CurrentControlSet\Control\CrashControl'
Set-ItemProperty -Path $crash -Name CrashDumpEnabled -Value 2 -Type DWord
Set-ItemProperty -Path $crash -Name DumpFile -Value '%SystemRoot%\MEMORY.DMP' -Type ExpandString
Set-ItemProperty -Path $crash -Name MinidumpDir -Value '%SystemRoot%\Minidump' -Type ExpandString
Set-ItemProperty -Path $crash -Name MinidumpsCount -Value 50 -Type DWord
Set-ItemProperty -Path $crash -Name Overwrite -Value 1 -Type DWord
Set-ItemProperty -Path $crash -Name AlwaysKeepMemoryDump -Value 1 -Type DWord
Set-ItemProperty -Path $crash -Name AutoReboot -Value 1 -Type DWord
Set-ItemProperty -Path $crash -Name LogEvent -Value 1 -Type DWord
# Dump even when the system drive is low on space, and do not let the
# "disable dumps on small disks" heuristic turn them off.
Set-ItemProperty -Path $crash -Name IgnorePagefileSize -Value 1 -Type DWord

# A fixed page file of RAM + 1 GB on C: holds a kernel dump with room to spare
# (a full dump needs RAM + 1 MB; ebpf-for-windows scripts/config_test_vm.psm1; docs/sources.md).
$ramMb = [math]::Ceiling((Get-CimInstance Win32_ComputerSystem).TotalPhysicalMemory / 1MB)
$sizeMb = [int]($ramMb + 1024)
$cs = Get-CimInstance Win32_ComputerSystem
if ($cs.AutomaticManagedPagefile) {
    Set-CimInstance -InputObject $cs -Property @{ AutomaticManagedPagefile = $false }
}
Get-CimInstance Win32_PageFileSetting | Remove-CimInstance
New-CimInstance -ClassName Win32_PageFileSetting -Property @{
    Name = 'C:\pagefile.sys'; InitialSize = [uint32]$sizeMb; MaximumSize = [uint32]$sizeMb
} | Out-Null
New-Item -ItemType Directory -Force -Path "$env:SystemRoot\Minidump" | Out-Null

# --- pktmon: built in; just make sure it is there and idle ------------------
$pktmon = "$env:SystemRoot\System32\PktMon.exe"
if (-not (Test-Path $pktmon)) { throw 'pktmon.exe is missing; this Windows build is too old for the harness' }
& $pktmon stop 2>$null | Out-Null
& $pktmon filter remove | Out-Null

# --- what the orchestrator reads back -----------------------------------------
New-Item -ItemType Directory -Force -Path C:\wfp | Out-Null
@{ pagefile_mb = $sizeMb; crash_dump = 'kernel'; testsigning = $true } |
    ConvertTo-Json | Set-Content -Path C:\wfp\debug-config.json -Encoding utf8
