// For current Packer (1.7 and later) ONLY. Not part of the template: it lives in this
// sub-folder because Packer 1.6.6 (Debian's package, builders bundled) rejects the
// required_plugins block ("Blocks of type required_plugins are not expected here"), and
// `packer build <folder>` reads only the *.pkr.hcl files of that folder, not its sub-folders.
//
// With current Packer, install the plugin once, then build the template folder as usual:
//   packer init include/packer/debian12-nginx/init
//   packer build include/packer/debian12-nginx
// Packer loads installed plugins from its plugin directory; the template needs nothing else.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}
