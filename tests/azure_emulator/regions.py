"""Azure region names: ARM stores ``location`` normalized ("eastus2") but some properties (gallery
image version target regions, replication status) come back in display form ("East US 2")."""

from __future__ import annotations

import re

DISPLAY_NAMES = {
    "eastus": "East US", "eastus2": "East US 2", "westus": "West US", "westus2": "West US 2",
    "westus3": "West US 3", "centralus": "Central US", "northcentralus": "North Central US",
    "southcentralus": "South Central US", "westcentralus": "West Central US",
    "canadacentral": "Canada Central", "canadaeast": "Canada East", "brazilsouth": "Brazil South",
    "mexicocentral": "Mexico Central", "northeurope": "North Europe", "westeurope": "West Europe",
    "uksouth": "UK South", "ukwest": "UK West", "francecentral": "France Central",
    "francesouth": "France South", "germanywestcentral": "Germany West Central",
    "germanynorth": "Germany North", "swedencentral": "Sweden Central",
    "switzerlandnorth": "Switzerland North", "switzerlandwest": "Switzerland West",
    "norwayeast": "Norway East", "norwaywest": "Norway West", "polandcentral": "Poland Central",
    "italynorth": "Italy North", "spaincentral": "Spain Central", "australiaeast": "Australia East",
    "australiasoutheast": "Australia Southeast", "australiacentral": "Australia Central",
    "japaneast": "Japan East", "japanwest": "Japan West", "koreacentral": "Korea Central",
    "koreasouth": "Korea South", "southeastasia": "Southeast Asia", "eastasia": "East Asia",
    "centralindia": "Central India", "southindia": "South India", "westindia": "West India",
    "uaenorth": "UAE North", "qatarcentral": "Qatar Central", "israelcentral": "Israel Central",
    "southafricanorth": "South Africa North",
}


def normalize(location: object) -> str | None:
    """"East US 2" / "eastus2" / "EASTUS2" -> "eastus2"; None for an unknown region."""
    if not isinstance(location, str):
        return None
    key = re.sub(r"[\s_-]", "", location).lower()
    return key if key in DISPLAY_NAMES else None


def display(location: str) -> str:
    key = normalize(location)
    return DISPLAY_NAMES[key] if key else location
