"""recdag library: everything the DVC stages call. No stage paths, no params.yaml reading here."""

