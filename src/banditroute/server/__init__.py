"""The gRPC front: proto <-> domain conversion, the servicer and the server lifecycle."""
