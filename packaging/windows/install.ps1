# Courier: install from the zip, for those who prefer it to the MSI.
# Run in an elevated PowerShell from the unpacked folder:
#   powershell -ExecutionPolicy Bypass -File .\install.ps1 [-Uninstall]
# Installs courier.exe to C:\Program Files\Courier, the example config to
# C:\ProgramData\Courier\courier.yaml (an existing one is kept), and the
# "courier" service through `courier service install` (delayed automatic
# start, restart on failure, Event Log source). It does not start it: edit
# the config, then `courier service start`. -Uninstall removes the service
# and the program; the config and the spool (C:\ProgramData\Courier) stay.
param([switch]$Uninstall)
$ErrorActionPreference = 'Stop'

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Write-Error 'install.ps1 must run in an elevated (Administrator) PowerShell.'
    exit 1
}

$bin = Join-Path $env:ProgramFiles 'Courier'
$data = Join-Path $env:ProgramData 'Courier'
$exe = Join-Path $bin 'courier.exe'
$config = Join-Path $data 'courier.yaml'

if ($Uninstall) {
    if (Test-Path $exe) {
        & $exe service stop --config $config 2>$null
        & $exe service uninstall --config $config
        if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    }
    Remove-Item -Recurse -Force $bin -ErrorAction SilentlyContinue
    Write-Host "Courier removed; $data (config and spool) is kept."
    exit 0
}

New-Item -ItemType Directory -Force -Path $bin, $data | Out-Null
Copy-Item -Force (Join-Path $PSScriptRoot 'courier.exe') $exe
if (-not (Test-Path $config)) {
    Copy-Item (Join-Path $PSScriptRoot 'courier.yaml') $config
} else {
    Write-Host "Keeping the existing $config."
}
& $exe service install --config $config
if ($LASTEXITCODE -ne 0) {
    Write-Error "courier service install failed (exit $LASTEXITCODE); fix the config and run install.ps1 again."
    exit $LASTEXITCODE
}
Write-Host "Installed. Edit $config, then: & '$exe' config validate '$config'; & '$exe' service start"
