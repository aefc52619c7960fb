"""The mock cloud region: durable Azure-like block-blob storage and the `CloudRegionService`."""
