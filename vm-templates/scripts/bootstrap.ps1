# First logon (autounattend FirstLogonCommands): VMware Tools, so Packer can
# see the guest's IP, then the OpenSSH server with key-only login, so Packer
# and the orchestrator can log in with a key. Runs from the WFPSETUP CD.
$ErrorActionPreference = 'Stop'
New-Item -ItemType Directory -Force -Path C:\wfp | Out-Null
Start-Transcript -Path C:\wfp\bootstrap.log -Append

$setupCd = (Get-Volume -FileSystemLabel WFPSETUP).DriveLetter + ':'

# --- VMware Tools from the Tools ISO (second CD in iso_paths) -------------
$tools = Get-Volume | Where-Object { $_.DriveType -eq 'CD-ROM' -and $_.DriveLetter } |
    ForEach-Object { "$($_.DriveLetter):\setup64.exe" } | Where-Object { Test-Path $_ } | Select-Object -First 1
if (-not $tools) { throw 'VMware Tools ISO (setup64.exe) not found on any CD drive' }
$p = Start-Process -FilePath $tools -ArgumentList '/s /v "/qn REBOOT=R ADDLOCAL=ALL"' -Wait -PassThru
# 3010 = success, reboot required
if ($p.ExitCode -notin 0, 3010) { throw "VMware Tools setup failed: $($p.ExitCode)" }

# --- OpenSSH server (Windows capability, so servicing keeps it updated) ---
$cap = Get-WindowsCapability -Online -Name 'OpenSSH.Server*' | Select-Object -First 1
if ($cap.State -ne 'Installed') { Add-WindowsCapability -Online -Name $cap.Name | Out-Null }

# The ed25519 host key is the one the template build generated on the build
# host (WFPSETUP CD) and recorded in the template's extraConfig as
# guestinfo.wfp.ssh_host_key: install it before sshd first starts, readable
# by SYSTEM and Administrators only (by SID: names are localized).
$sshDir = "$env:ProgramData\ssh"
New-Item -ItemType Directory -Force -Path $sshDir | Out-Null
Copy-Item -Path "$setupCd\ssh_host_ed25519_key" -Destination "$sshDir\ssh_host_ed25519_key" -Force
Copy-Item -Path "$setupCd\ssh_host_ed25519_key.pub" -Destination "$sshDir\ssh_host_ed25519_key.pub" -Force
icacls.exe "$sshDir\ssh_host_ed25519_key" /inheritance:r /grant '*S-1-5-18:F' /grant '*S-1-5-32-544:F' | Out-Null
if ($LASTEXITCODE -ne 0) { throw "icacls on the host key failed: $LASTEXITCODE" }
# Generate the other host key types sshd wants; ed25519 is kept.
Start-Service sshd
Stop-Service sshd

# The account the orchestrator logs in as (guest-matrix.toml: account = "wfpadmin"):
# key-only SSH, so its random password is never stored anywhere.
$bytes = New-Object byte[] 32
[System.Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($bytes)
$secret = ConvertTo-SecureString ([Convert]::ToBase64String($bytes) + 'aA1!') -AsPlainText -Force
New-LocalUser -Name 'wfpadmin' -Password $secret -PasswordNeverExpires -AccountNeverExpires `
    -Description 'wfp-harness orchestrator (SSH key only)' | Out-Null
Add-LocalGroupMember -SID 'S-1-5-32-544' -Member 'wfpadmin'

$config = "$env:ProgramData\ssh\sshd_config"
$text = Get-Content $config -Raw
foreach ($setting in 'PasswordAuthentication', 'PubkeyAuthentication', 'KbdInteractiveAuthentication') {
    $text = $text -replace "(?m)^#?\s*$setting\s+.*$", ''
}
# Key-only login; explicit so a later default change cannot reopen passwords.
$text = "PasswordAuthentication no`r`nKbdInteractiveAuthentication no`r`nPubkeyAuthentication yes`r`n" + $text
Set-Content -Path $config -Value $text -Encoding ascii

# Administrators use administrators_authorized_keys (the Match block in the
# default sshd_config); OpenSSH ignores it unless only SYSTEM and
# Administrators can access it.
$keys = "$env:ProgramData\ssh\administrators_authorized_keys"
Copy-Item -Path "$setupCd\administrators_authorized_keys" -Destination $keys -Force
icacls.exe $keys /inheritance:r /grant '*S-1-5-32-544:F' /grant '*S-1-5-18:F' | Out-Null

Set-Service -Name sshd -StartupType Automatic
New-NetFirewallRule -Name 'wfp-sshd' -DisplayName 'OpenSSH Server (wfp)' -Protocol TCP -LocalPort 22 `
    -Direction Inbound -Action Allow -ErrorAction SilentlyContinue | Out-Null
New-ItemProperty -Path 'HKLM:\SOFTWARE\OpenSSH' -Name DefaultShell -PropertyType String -Force `
    -Value "$env:SystemRoot\System32\WindowsPowerShell\v1.0\powershell.exe" | Out-Null
Start-Service sshd

Stop-Transcript
# Tools asked for a reboot (REBOOT=R); take it now, sshd starts on boot.
Restart-Computer -Force
