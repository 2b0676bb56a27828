# Check that sshd serves the host key the template build generated and
# recorded in the template's extraConfig (guestinfo.wfp.ssh_host_key, set by
# Packer's configuration_parameters at VM creation, so every linked clone
# inherits it and the orchestrator pins it; the guest never publishes its
# own pin).  The build copied the key from the WFPSETUP CD in bootstrap.ps1.
$ErrorActionPreference = 'Stop'
$setupCd = (Get-Volume -FileSystemLabel WFPSETUP).DriveLetter + ':'
$expected = (Get-Content "$setupCd\ssh_host_ed25519_key.pub" -Raw).Trim().Split(' ')[0..1] -join ' '
$served = (Get-Content "$env:ProgramData\ssh\ssh_host_ed25519_key.pub" -Raw).Trim().Split(' ')[0..1] -join ' '
if ($served -ne $expected) { throw "sshd serves $served, the template records $expected" }
# The orchestrator's account must exist and be an administrator (by SID: group names are localized).
$admins = Get-LocalGroupMember -SID 'S-1-5-32-544' | ForEach-Object { $_.SID.Value }
$user = Get-LocalUser -Name 'wfpadmin'
if ($admins -notcontains $user.SID.Value) { throw 'wfpadmin is not in the Administrators group (S-1-5-32-544)' }
Write-Output "host key as recorded: $expected; wfpadmin is an administrator"
