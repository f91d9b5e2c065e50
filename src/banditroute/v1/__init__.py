"""Generated gRPC/protobuf code for banditroute.v1 (do not edit; run `make proto`)."""
