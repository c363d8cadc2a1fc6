package sluice

// The gRPC stubs in sluicepb/ are generated from ../../proto with the
// protoc-gen-go and protoc-gen-go-grpc versions go.mod pins as tools:
//
//	PROTOC=/path/to/protoc go generate
//
// TestStubsMatchTheProto fails when they drift from the proto.

//go:generate sh generate.sh
