"""coffea processors that turn NanoAOD into the lhcad Zarr feature store."""
