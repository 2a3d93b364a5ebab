// Inputs of the debian12-nginx image family (local target: Packer qemu builder).
// Required: base_image_path, base_image_checksum, output_directory, ssh_private_key_file,
// ssh_public_key_file, manifest_path, package_list_path, image_version. Pass them as PKR_VAR_<name> environment
// variables (or -var); nothing here is a secret, the SSH key pair is ephemeral (one per build).

variable "base_image_path" {
  type        = string
  description = "Path of the Debian 12 base qcow2 built by scripts/build-base-image.sh (its stable path, e.g. $BAKERY_HOME/base/debian12.qcow2)."
}

variable "base_image_checksum" {
  type        = string
  description = "sha256 of the base image, 64 lowercase hex digits: the first field of the .sha256 file next to it."

  // Packer 1.6.6 has no regex functions in validation conditions: length + case only here; a
  // non-hex value still fails Packer's checksum verification.
  validation {
    condition     = length(var.base_image_checksum) == 64 && lower(var.base_image_checksum) == var.base_image_checksum
    error_message = "The base_image_checksum must be a sha256 digest: 64 lowercase hex digits (the first field of <base image>.sha256)."
  }
}

variable "output_directory" {
  type        = string
  description = "Directory Packer writes the new image into. It must not exist yet."
}

variable "vm_name" {
  type        = string
  default     = "debian12-nginx.qcow2"
  description = "File name of the built disk image inside output_directory."
}

variable "accelerator" {
  type        = string
  default     = "tcg"
  description = "QEMU accelerator: kvm (hardware virtualisation usable) or tcg (emulation). See plugins/bakery/accel.py."

  validation {
    condition     = contains(["kvm", "tcg"], var.accelerator)
    error_message = "The accelerator must be \"kvm\" or \"tcg\"."
  }
}

variable "cpu_model" {
  type        = string
  default     = "qemu64"
  description = "QEMU -cpu model. A portable model by default, never host: images must boot anywhere."
}

variable "ssh_private_key_file" {
  type        = string
  description = "Private half of the ephemeral SSH key pair of this build; Packer logs in as root with it."
}

variable "ssh_public_key_file" {
  type        = string
  description = "Public half of the ephemeral key pair; handed to the guest through QEMU fw_cfg (opt/bakery/authorized_keys) and removed from the image at the end of provisioning."
}

variable "manifest_path" {
  type        = string
  description = "Where the manifest post-processor writes its JSON (artifact files, build time, packer run uuid, custom_data)."
}

variable "image_version" {
  type        = string
  description = "Version of the image being baked; written to /etc/bakery-release in the image and to the manifest custom_data."

  validation {
    condition     = var.image_version != "" && length(split(" ", var.image_version)) == 1 && length(split("/", var.image_version)) == 1
    error_message = "The image_version must be non-empty, without spaces or slashes (e.g. 2024.06.01-1)."
  }
}

variable "memory" {
  type        = number
  default     = 1024
  description = "Memory of the build VM, in MiB."
}

variable "cpus" {
  type        = number
  default     = 2
  description = "Virtual CPUs of the build VM."
}

variable "disk_size" {
  type        = string
  default     = "4096M"
  description = "Virtual size of the image's disk. The base image is 4096M; a larger value grows the disk but not the root partition."
}

variable "disk_compression" {
  type        = bool
  default     = false
  description = "Compress the output qcow2 (smaller artifact, slower build)."
}

variable "ssh_timeout" {
  type        = string
  default     = "15m"
  description = "How long Packer waits for SSH to come up (TCG boots are slow)."
}

variable "serial_log_path" {
  type        = string
  default     = ""
  description = "If set, the build VM's serial console is written to this file (kernel and systemd messages: useful when SSH never comes up). Keep it outside output_directory."
}

variable "package_list_path" {
  type        = string
  description = "Where Packer downloads the guest's installed package list (../shared/capture-packages.sh) at the end of provisioning."
}

variable "packages" {
  type        = string
  default     = "nginx"
  description = "Packages to install on top of the base image, space separated (the catalogue's variables.packages)."
}

variable "apt_sources_b64" {
  type        = string
  default     = ""
  description = "base64 of the sources.list the build installs from (the bakery's package server for this run); empty: the image's own sources."
}

variable "apt_conf_b64" {
  type        = string
  default     = ""
  description = "base64 of apt options for the build only (e.g. Acquire::Check-Valid-Until false for a dated snapshot)."
}
