"""One servicer per gRPC service: parse the request, call a use case, convert the answer."""
