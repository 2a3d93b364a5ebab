// Inputs of the ubuntu2404-nginx-azure image family (Azure target: Packer azure-arm builder).
//
// Required (no default): subscription_id, location, managed_image_resource_group_name,
// image_version, dag_run_id, manifest_path, package_list_path. Everything else has a default.
// The product writes the plain values into a JSON var-file and passes client_secret ONLY as the
// environment variable PKR_VAR_client_secret: never on the command line, never in a file.
//
// Note the two "versions": image_version is the version of the image WE bake (the gallery image
// version, e.g. 2026.1128.200000); base_image_version is the marketplace version we start from.

// --- Azure authentication --------------------------------------------------------------------
// Service principal: subscription_id + tenant_id + client_id + client_secret.
// Azure CLI (`az login` session of the user running Packer): use_azure_cli_auth = true.
// Managed identity of the machine running Packer (an Azure VM): leave client_id, client_secret,
// tenant_id empty (and use_azure_cli_auth false). Any other mix is refused by the builder
// ("No valid set of authentication values specified").

variable "client_id" {
  type        = string
  default     = ""
  description = "Application (client) ID of the service principal Packer authenticates as. Ignored when use_azure_cli_auth is true."
}

variable "client_secret" {
  type        = string
  default     = ""
  sensitive   = true
  description = "Secret of the service principal. Pass it ONLY as the environment variable PKR_VAR_client_secret (never -var, never a var-file). Ignored when use_azure_cli_auth is true."
}

variable "tenant_id" {
  type        = string
  default     = ""
  description = "Microsoft Entra ID (Azure AD) tenant of the service principal. Ignored when use_azure_cli_auth is true."
}

variable "subscription_id" {
  type        = string
  description = "Subscription in which Packer builds and in which the managed image is created."
}

variable "use_azure_cli_auth" {
  type        = bool
  default     = false
  description = "Authenticate with the Azure CLI's current `az login` session instead of a service principal (client_id, client_secret and tenant_id are then not passed to the builder)."
}

variable "cloud_environment_name" {
  type        = string
  default     = "Public"
  description = "Azure cloud: Public, China or USGovernment (long forms such as AzureUSGovernmentCloud are accepted too)."

  validation {
    condition = contains([
      "public", "publiccloud", "azurepubliccloud",
      "china", "chinacloud", "azurechinacloud",
      "usgovernment", "usgovernmentcloud", "azureusgovernmentcloud",
    ], lower(var.cloud_environment_name))
    error_message = "The cloud_environment_name must be Public, China or USGovernment (or a long form such as AzureUSGovernmentCloud)."
  }
}

// --- Where and how to build --------------------------------------------------------------------

variable "location" {
  type        = string
  description = "Azure region of the build and of the managed image, e.g. westeurope. With build_resource_group_name set it must be that resource group's region (Packer then builds there and is not given a location: azure-arm accepts only one of the two)."

  validation {
    condition     = var.location != "" && length(split(" ", var.location)) == 1
    error_message = "The location must be an Azure region name without spaces, e.g. westeurope (see `az account list-locations -o table`, column Name)."
  }
}

variable "vm_size" {
  type        = string
  default     = "Standard_D2s_v5"
  description = "Size of the temporary build VM. It must support Hyper-V generation 2, as the server SKU of Ubuntu 24.04 is."
}

variable "build_resource_group_name" {
  type        = string
  default     = ""
  description = "Existing resource group to build in. Empty (the default): Packer creates a temporary resource group in location and deletes it at the end. Set: Packer builds in this group (it must exist, Packer never deletes it) and deletes only what it created in it."
}

variable "managed_image_resource_group_name" {
  type        = string
  description = "Existing resource group that receives the managed image (the product then publishes a gallery image version from it)."
}

// --- What to bake ------------------------------------------------------------------------------

variable "image_name" {
  type        = string
  default     = "ubuntu2404-nginx"
  description = "Image family: the gallery image definition name, and the prefix of the managed image name."

  validation {
    condition     = var.image_name != "" && length(var.image_name) <= 47 && lower(var.image_name) == var.image_name && length(split(" ", var.image_name)) == 1 && length(split(".", var.image_name)) == 1 && length(split("/", var.image_name)) == 1
    error_message = "The image_name must be 1-47 lowercase characters without spaces, dots or slashes, e.g. ubuntu2404-nginx (the managed image name <image_name>-<version with dashes> must fit in 80 characters)."
  }
}

variable "image_version" {
  type        = string
  description = "Version being baked, as Azure Compute Gallery wants it: Major.Minor.Patch, three non-negative 32-bit integers without leading zeros (e.g. 2026.1128.200000, see plugins/bakery/versioning.py)."

  // Packer 1.6.6 has no regex or tonumber functions: parseint + format round-trip instead.
  validation {
    condition     = length(split(".", var.image_version)) == 3 && length([for p in split(".", var.image_version) : p if try(format("%d", parseint(p, 10)) == p && parseint(p, 10) >= 0 && parseint(p, 10) <= 2147483647, false)]) == 3
    error_message = "The image_version must be Major.Minor.Patch: three non-negative integers below 2^31 without leading zeros, e.g. 2026.1128.200000."
  }
}

variable "dag_run_id" {
  type        = string
  description = "Airflow DAG run that bakes this image (tag dag_run_id on every resource Packer creates, so that leftovers can be traced and cleaned up)."

  validation {
    condition     = var.dag_run_id != "" && length(var.dag_run_id) <= 256
    error_message = "The dag_run_id must be non-empty and at most 256 characters (an Azure tag value)."
  }
}

variable "manifest_path" {
  type        = string
  description = "Where the manifest post-processor writes its JSON (artifact id = managed image id, packer run uuid, custom_data)."
}

variable "package_list_path" {
  type        = string
  description = "Where Packer downloads the build VM's installed package list (../shared/capture-packages.sh, run before deprovisioning): the version's package manifest, SBOM and manifest digest tag."
}

// --- Base image: Ubuntu 24.04 LTS from the Azure Marketplace -----------------------------------
// URN Canonical:ubuntu-24_04-lts:server:latest (Hyper-V generation 2). Canonical's images carry no
// purchase plan, so the plan_* variables are empty; set all three for a base image that has one
// (`az vm image show --urn <urn> --query plan`), and accept its terms once per subscription.

variable "base_image_publisher" {
  type        = string
  default     = "Canonical"
  description = "Marketplace publisher of the base image (azure-arm image_publisher)."
}

variable "base_image_offer" {
  type        = string
  default     = "ubuntu-24_04-lts"
  description = "Marketplace offer of the base image (azure-arm image_offer)."
}

variable "base_image_sku" {
  type        = string
  default     = "server"
  description = "Marketplace SKU of the base image (azure-arm image_sku); server is Hyper-V generation 2 (server-gen1 is generation 1)."
}

variable "base_image_version" {
  type        = string
  default     = "latest"
  description = "Marketplace version of the base image (azure-arm image_version): latest, or a fixed version to rebuild from a known base."
}

variable "plan_name" {
  type        = string
  default     = ""
  description = "Purchase plan name of the base image (plan_info.plan_name). Empty: the base image has no plan (Canonical's do not)."
}

variable "plan_product" {
  type        = string
  default     = ""
  description = "Purchase plan product of the base image (plan_info.plan_product). Empty: no plan."
}

variable "plan_publisher" {
  type        = string
  default     = ""
  description = "Purchase plan publisher of the base image (plan_info.plan_publisher). Empty: no plan."
}
