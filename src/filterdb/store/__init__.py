"""The HDF5 filter database: layout, shards, transactional writer, reader."""
