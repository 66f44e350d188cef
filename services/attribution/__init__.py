"""Attribution: inference events and rates in, cost allocations out."""
