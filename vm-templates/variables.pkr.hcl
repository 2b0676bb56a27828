# Inputs of the WFP guest templates. Secrets come from the environment or
# a -var-file kept out of the repo; none has a literal value here.

variable "vcenter_server" {
  type        = string
  description = "vCenter host name"
  default     = env("VSPHERE_SERVER")
}

variable "vcenter_username" {
  type      = string
  sensitive = true
  default   = env("VSPHERE_USER")
}

variable "vcenter_password" {
  type      = string
  sensitive = true
  default   = env("VSPHERE_PASSWORD")
}

variable "vcenter_insecure" {
  type        = bool
  description = "Skip TLS verification of vCenter (lab only)"
  default     = false
}

variable "datacenter" {
  type = string
}

variable "cluster" {
  type = string
}

variable "datastore" {
  type = string
}

variable "network" {
  type = string
}

variable "folder" {
  type    = string
  default = "wfp-templates"
}

variable "iso_ws2022" {
  type        = string
  description = "Datastore path of the Windows Server 2022 ISO, e.g. [iso] windows/ws2022.iso"
}

variable "iso_ws2025" {
  type = string
}

variable "iso_win11" {
  type = string
}

variable "vmtools_iso" {
  type        = string
  description = "Datastore path of the VMware Tools for Windows ISO (windows.iso)"
}

variable "guest_admin_password" {
  type        = string
  sensitive   = true
  description = "Password of the built-in Administrator, used once by Setup for the first logon; SSH is key-only"
  default     = env("WFP_GUEST_ADMIN_PASSWORD")
}

variable "ssh_public_key_file" {
  type        = string
  description = "Public key put into administrators_authorized_keys"
  default     = env("WFP_SSH_PUBLIC_KEY_FILE")
}

variable "ssh_private_key_file" {
  type        = string
  description = "Matching private key; Packer and the orchestrator log in with it"
  default     = env("WFP_SSH_PRIVATE_KEY_FILE")
}

variable "ssh_host_key_file" {
  type        = string
  sensitive   = true
  description = "The guest's ed25519 SSH host key generated on the build host (ssh-keygen -t ed25519 -N '' -f FILE); FILE.pub is recorded in the template's extraConfig as guestinfo.wfp.ssh_host_key"
  default     = env("WFP_SSH_HOST_KEY_FILE")
}

variable "python_installer_url" {
  type    = string
  default = "https://www.python.org/ftp/python/3.11.9/python-3.11.9-amd64.exe"
}

variable "python_installer_sha256" {
  type        = string
  description = "SHA-256 of the Python installer (from python.org's release page); required, the build fails on a mismatch"
}

variable "winsdk_installer_url" {
  type        = string
  description = "Windows SDK web installer; only its debugging tools (cdb) are installed"
  default     = "https://go.microsoft.com/fwlink/?linkid=2286561"
}

variable "cpus" {
  type    = number
  default = 4
}

variable "memory_mb" {
  type    = number
  default = 8192
}

variable "disk_gb" {
  type    = number
  default = 80
}
