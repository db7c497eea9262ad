"""The gRPC edge: servicers that translate protobuf to domain calls, and the error map."""
