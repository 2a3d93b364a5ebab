// rhel9-nginx-azure: AlmaLinux 9 (a RHEL 9 rebuild) from the Azure Marketplace + all updates + nginx,
// captured as a managed image. Azure target: Packer azure-arm builder. The product, not Packer,
// then publishes a gallery image version from that managed image (no
// shared_image_gallery_destination here), smoke-tests it and prunes old versions.
//
// The modern form of the seed article's JSON template (CentOS 8 + nginx, plan_info, deprovision
// last), in HCL2. Works with Packer 1.6.6 (builders bundled); for current Packer see
// init/required_plugins.pkr.hcl and README.md.

packer {
  required_version = ">= 1.6.6"
}

locals {
  // Managed image names allow dots, but dashes keep the name readable in every Azure tool and
  // identical to what the product derives: <family>-<Major>-<Minor>-<Patch>.
  managed_image_name = "${var.image_name}-${replace(var.image_version, ".", "-")}"

  // Tags on every resource Packer deploys (temporary resource group, VM, NIC, virtual network,
  // public IP, key vault) and on the managed image: a leftover always says which bake made it,
  // and since when (created_at, UTC, the build's start: the janitor judges a leftover's age by it).
  azure_tags = {
    image      = var.image_name
    version    = var.image_version
    dag_run_id = var.dag_run_id
    managed_by = "image-bakery"
    created_at = timestamp()
  }
}

source "azure-arm" "rhel9" {
  // Authentication: a service principal, or the Azure CLI's login, or (all empty) the managed
  // identity of the machine running Packer. client_secret comes from PKR_VAR_client_secret.
  use_azure_cli_auth     = var.use_azure_cli_auth
  client_id              = var.use_azure_cli_auth ? "" : var.client_id
  client_secret          = var.use_azure_cli_auth ? "" : var.client_secret
  tenant_id              = var.use_azure_cli_auth ? "" : var.tenant_id
  subscription_id        = var.subscription_id
  cloud_environment_name = var.cloud_environment_name

  // Base image: a Marketplace image with a purchase plan (Azure refuses to deploy it without).
  os_type         = "Linux"
  image_publisher = var.base_image_publisher
  image_offer     = var.base_image_offer
  image_sku       = var.base_image_sku
  image_version   = var.base_image_version
  plan_info {
    plan_name      = var.plan_name
    plan_product   = var.plan_product
    plan_publisher = var.plan_publisher
  }

  // Where: azure-arm takes EITHER a location (it creates a temporary resource group there and
  // deletes it at the end) OR an existing build_resource_group_name, never both.
  location                  = var.build_resource_group_name == "" ? var.location : ""
  build_resource_group_name = var.build_resource_group_name
  vm_size                   = var.vm_size

  // Output: a managed image; the product turns it into a gallery image version.
  managed_image_name                = local.managed_image_name
  managed_image_resource_group_name = var.managed_image_resource_group_name

  azure_tags = local.azure_tags
}

build {
  sources = ["source.azure-arm.rhel9"]

  // 1. Update, nginx, /etc/bakery-release: what the image contains.
  provisioner "shell" {
    script          = "${path.root}/scripts/provision.sh"
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    environment_vars = [
      "BAKERY_IMAGE_NAME=${var.image_name}",
      "BAKERY_IMAGE_VERSION=${var.image_version}",
    ]
  }

  // 2. The installed package set (rpm), captured after the last package change and before
  // deprovisioning (nothing can log in after it): the version's manifest, SBOM and digest tag.
  provisioner "shell" {
    script          = "${path.root}/../shared/capture-packages.sh"
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
  }

  provisioner "file" {
    direction   = "download"
    source      = "/tmp/bakery-packages.tsv"
    destination = var.package_list_path
  }

  // 3. Generalise. The script deprovisions the VM (waagent -deprovision+user) as its very last
  // step, which deletes the build user: nothing may run after it, and Packer must not try to clean
  // up over SSH afterwards (skip_clean; the script removes itself instead).
  provisioner "shell" {
    script          = "${path.root}/scripts/deprovision.sh"
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh '{{ .Path }}'"
    skip_clean      = true
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = false
    custom_data = {
      image_name                        = var.image_name
      image_version                     = var.image_version
      managed_image_name                = local.managed_image_name
      managed_image_resource_group_name = var.managed_image_resource_group_name
      dag_run_id                        = var.dag_run_id
      base_image                        = "${var.base_image_publisher}:${var.base_image_offer}:${var.base_image_sku}:${var.base_image_version}"
      // A gallery image definition made from this image must carry the same purchase plan.
      plan_name      = var.plan_name
      plan_product   = var.plan_product
      plan_publisher = var.plan_publisher
    }
  }
}
