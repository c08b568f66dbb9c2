"""Generated callmesh contracts (see protos/)."""
