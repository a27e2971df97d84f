"""tablelock coordinator: order and payment locks between a restaurant ERP and its H5 page."""
