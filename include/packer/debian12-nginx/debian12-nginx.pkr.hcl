// debian12-nginx: Debian 12 base image + security/point-release updates + nginx.
// Local target: Packer qemu builder, booting the base qcow2 built by scripts/build-base-image.sh.
// Works with Packer 1.6.6 (builders bundled). For current Packer see init/required_plugins.pkr.hcl.

packer {
  required_version = ">= 1.6.6"
}

locals {
  // QEMU option syntax doubles commas inside values.
  fw_cfg_ssh_key = "name=opt/bakery/authorized_keys,file=${replace(var.ssh_public_key_file, ",", ",,")}"
  serial_args    = var.serial_log_path == "" ? [] : [["-serial", "file:${replace(var.serial_log_path, ",", ",,")}"]]
}

source "qemu" "debian12" {
  disk_image       = true
  iso_url          = var.base_image_path
  iso_checksum     = "sha256:${var.base_image_checksum}"
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_compression = var.disk_compression
  disk_interface   = "virtio"
  net_device       = "virtio-net"
  accelerator      = var.accelerator
  memory           = var.memory
  cpus             = var.cpus
  headless         = true
  vnc_bind_address = "127.0.0.1"
  output_directory = var.output_directory
  vm_name          = var.vm_name
  boot_wait        = "1s"

  // Ephemeral SSH access: the public key reaches the guest through fw_cfg, where the base image's
  // bakery-fwcfg-ssh-keys.service installs it as /root/.ssh/authorized_keys before sshd starts.
  qemuargs = concat([
    ["-fw_cfg", local.fw_cfg_ssh_key],
    ["-cpu", var.cpu_model],
  ], local.serial_args)

  communicator           = "ssh"
  ssh_username           = "root"
  ssh_private_key_file   = var.ssh_private_key_file
  ssh_timeout            = var.ssh_timeout
  ssh_handshake_attempts = 50

  shutdown_command = "shutdown -P now"
  shutdown_timeout = "5m"
}

build {
  sources = ["source.qemu.debian12"]

  provisioner "shell" {
    script = "${path.root}/scripts/provision.sh"
    environment_vars = [
      "BAKERY_IMAGE_VERSION=${var.image_version}",
      "BAKERY_PACKAGES=${var.packages}",
      "BAKERY_APT_SOURCES_B64=${var.apt_sources_b64}",
      "BAKERY_APT_CONF_B64=${var.apt_conf_b64}",
      "DEBIAN_FRONTEND=noninteractive",
    ]
  }

  // The installed package set, for the version's manifest, SBOM and the pool index.
  provisioner "shell" {
    script = "${path.root}/../shared/capture-packages.sh"
  }

  provisioner "file" {
    direction   = "download"
    source      = "/tmp/bakery-packages.tsv"
    destination = var.package_list_path
  }

  provisioner "shell" {
    script = "${path.root}/scripts/generalize.sh"
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = false
    custom_data = {
      image_family        = "debian12-nginx"
      image_version       = var.image_version
      base_image_checksum = var.base_image_checksum
      accelerator         = var.accelerator
    }
  }
}
