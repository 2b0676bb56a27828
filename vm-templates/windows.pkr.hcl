# WFP test guests: one vsphere-iso source, one build per OS.
# Produces vSphere templates wfp-ws2022, wfp-ws2025, wfp-win11, each with a
# snapshot "baseline" taken after provisioning and shutdown (create_snapshot),
# which the orchestrator reverts to before every run.
#
#   packer init vm-templates
#   packer build -var-file=site.pkrvars.hcl -only='wfp.vsphere-iso.ws2022' vm-templates

packer {
  required_version = ">= 1.9.0"
  required_plugins {
    vsphere = {
      source  = "github.com/hashicorp/vsphere"
      version = ">= 1.2.4"
    }
  }
}

locals {
  scripts_dir = "${path.root}/scripts"
}

source "vsphere-iso" "windows" {
  vcenter_server      = var.vcenter_server
  username            = var.vcenter_username
  password            = var.vcenter_password
  insecure_connection = var.vcenter_insecure
  datacenter          = var.datacenter
  cluster             = var.cluster
  datastore           = var.datastore
  folder              = var.folder

  CPUs                 = var.cpus
  RAM                  = var.memory_mb
  RAM_reserve_all      = false
  # EFI without Secure Boot: bcdedit /set testsigning on is refused under
  # Secure Boot (appveyor/ci #919, vmware/ansible-vsphere-gos-validation #164; docs/sources.md). Never "efi-secure" here.
  firmware             = "efi"
  disk_controller_type = ["lsilogic-sas"]
  storage {
    disk_size             = var.disk_gb * 1024
    disk_thin_provisioned = true
  }
  network_adapters {
    network      = var.network
    network_card = "e1000e"
  }

  # Setup reads autounattend.xml and the bootstrap script from this CD.
  cd_label = "WFPSETUP"
  cd_files = [
    "${local.scripts_dir}/bootstrap.ps1",
  ]

  boot_wait    = "3s"
  boot_command = ["<spacebar><spacebar><spacebar>"]
  ip_wait_timeout = "90m"

  communicator         = "ssh"
  ssh_username         = "wfpadmin"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "90m"

  shutdown_command = "shutdown /s /t 10 /f /d p:4:1 /c \"packer shutdown\""
  shutdown_timeout = "30m"

  # The SSH host key: generated on the build host (README), recorded in the
  # VMX now, so the template and every linked clone carry it in
  # config.extraConfig where the orchestrator reads its pin.  Runtime
  # guestinfo a guest sets with rpctool is not this and is never read.
  configuration_parameters = {
    "guestinfo.wfp.ssh_host_key" = trimspace(file("${var.ssh_host_key_file}.pub"))
  }
  # The private host key travels on the WFPSETUP CD: detach it before the snapshot.
  remove_cdrom = true

  convert_to_template = true
  create_snapshot     = true
  snapshot_name       = "baseline"
}

build {
  name = "wfp"

  source "vsphere-iso.windows" {
    name          = "ws2022"
    vm_name       = "wfp-ws2022"
    guest_os_type = "windows2019srvNext_64Guest"
    iso_paths     = [var.iso_ws2022, var.vmtools_iso]
    cd_content = {
      "autounattend.xml"                = templatefile("${path.root}/autounattend/ws2022.xml", { admin_password = var.guest_admin_password })
      "administrators_authorized_keys" = file(var.ssh_public_key_file)
      "ssh_host_ed25519_key"           = file(var.ssh_host_key_file)
      "ssh_host_ed25519_key.pub"       = file("${var.ssh_host_key_file}.pub")
    }
  }

  source "vsphere-iso.windows" {
    name          = "ws2025"
    vm_name       = "wfp-ws2025"
    guest_os_type = "windows2022srvNext_64Guest"
    iso_paths     = [var.iso_ws2025, var.vmtools_iso]
    cd_content = {
      "autounattend.xml"                = templatefile("${path.root}/autounattend/ws2025.xml", { admin_password = var.guest_admin_password })
      "administrators_authorized_keys" = file(var.ssh_public_key_file)
      "ssh_host_ed25519_key"           = file(var.ssh_host_key_file)
      "ssh_host_ed25519_key.pub"       = file("${var.ssh_host_key_file}.pub")
    }
  }

  source "vsphere-iso.windows" {
    name          = "win11"
    vm_name       = "wfp-win11"
    guest_os_type = "windows11_64Guest"
    iso_paths     = [var.iso_win11, var.vmtools_iso]
    cd_content = {
      "autounattend.xml"                = templatefile("${path.root}/autounattend/win11.xml", { admin_password = var.guest_admin_password })
      "administrators_authorized_keys" = file(var.ssh_public_key_file)
      "ssh_host_ed25519_key"           = file(var.ssh_host_key_file)
      "ssh_host_ed25519_key.pub"       = file("${var.ssh_host_key_file}.pub")
    }
  }

  # Python 3.11 and the debugging tools (cdb).
  provisioner "powershell" {
    environment_vars = [
      "WFP_PYTHON_URL=${var.python_installer_url}",
      "WFP_PYTHON_SHA256=${var.python_installer_sha256}",
      "WFP_WINSDK_URL=${var.winsdk_installer_url}",
    ]
    scripts = ["${local.scripts_dir}/install-tools.ps1"]
  }

  # Test signing, crash dumps, page file; pktmon and Secure Boot checks.
  provisioner "powershell" {
    scripts = ["${local.scripts_dir}/configure-debug.ps1"]
  }

  # testsigning and the dump settings take effect after a reboot.
  provisioner "windows-restart" {
    restart_timeout = "30m"
  }

  # Verify the reboot applied everything and the recorded SSH host key is served.
  provisioner "powershell" {
    scripts = [
      "${local.scripts_dir}/verify-guest.ps1",
      "${local.scripts_dir}/check-hostkey.ps1",
    ]
  }

  # Remove the one-time autologon before the baseline snapshot.
  provisioner "powershell" {
    scripts = ["${local.scripts_dir}/finalize.ps1"]
  }
}
