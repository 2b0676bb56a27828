# Last step before shutdown and the "baseline" snapshot: remove what only
# the build needed, so every run starts from the same clean state.
$ErrorActionPreference = 'Stop'
$winlogon = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon'
# Setup stored the first-logon password here; key-only SSH needs none.
Set-ItemProperty -Path $winlogon -Name AutoAdminLogon -Value '0'
Remove-ItemProperty -Path $winlogon -Name DefaultPassword -ErrorAction SilentlyContinue
Remove-Item -Force -ErrorAction SilentlyContinue "$env:SystemRoot\Panther\unattend.xml", "$env:SystemRoot\Panther\Unattend\unattend.xml"
Remove-Item -Recurse -Force -ErrorAction SilentlyContinue "$env:TEMP\*", "$env:SystemRoot\Temp\*"
# Dumps from the build itself are not evidence of anything.
Remove-Item -Force -ErrorAction SilentlyContinue "$env:SystemRoot\MEMORY.DMP", "$env:SystemRoot\Minidump\*"
Get-Date -Format o | Set-Content -Path C:\wfp\baseline-created.txt -Encoding ascii
