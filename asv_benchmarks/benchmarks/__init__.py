"""asv benchmarks of kdentropy (see ``asv_benchmarks/README.md``)."""
