// google.rpc.Status with a BadRequest detail, encoded by hand.
//
// gRPC's rich error model puts a serialized google.rpc.Status in the
// `grpc-status-details-bin` trailer; clients in every language
// (grpcio-status, grpc-go's status.FromError, grpcurl) decode it and find the
// offending field in a BadRequest detail. The three messages involved are
// tiny and frozen, so they are written with @bufbuild/protobuf's BinaryWriter
// rather than generating code from googleapis for them.
//
//   google.rpc.Status      { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
//   google.protobuf.Any    { string type_url = 1; bytes value = 2; }
//   google.rpc.BadRequest  { repeated FieldViolation field_violations = 1; }
//   FieldViolation         { string field = 1; string description = 2; }

import { create } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";

export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
export const BAD_REQUEST_TYPE_URL = "type.googleapis.com/google.rpc.BadRequest";
const INVALID_ARGUMENT = 3;

export function encodeBadRequest(field: string, description: string): Uint8Array {
  const writer = new BinaryWriter();
  writer.uint32((1 << 3) | 2).fork(); // field_violations, length-delimited
  writer.uint32((1 << 3) | 2).string(field);
  writer.uint32((2 << 3) | 2).string(description);
  writer.join();
  return writer.finish();
}

/** A serialized google.rpc.Status: INVALID_ARGUMENT, `message`, one BadRequest naming `field`. */
export function encodeInvalidArgumentStatus(message: string, field: string, description: string): Uint8Array {
  const writer = new BinaryWriter();
  writer.uint32((1 << 3) | 0).int32(INVALID_ARGUMENT);
  writer.uint32((2 << 3) | 2).string(message);
  writer.uint32((3 << 3) | 2).fork(); // details: one Any
  writer.uint32((1 << 3) | 2).string(BAD_REQUEST_TYPE_URL);
  writer.uint32((2 << 3) | 2).bytes(encodeBadRequest(field, description));
  writer.join();
  return writer.finish();
}

/**
 * A descriptor of google/rpc/error_details.proto reduced to BadRequest, served
 * by server reflection so that grpcurl can print the detail it finds in an
 * error (it looks the Any's type up through reflection), as it does against
 * the Python services, whose reflection serves the whole file.
 */
export function errorDetailsDescriptor(): FileDescriptorProto {
  const string = (name: string, number: number, jsonName: string) =>
    ({ name, number, jsonName, label: FieldDescriptorProto_Label.OPTIONAL, type: FieldDescriptorProto_Type.STRING }) as const;
  return create(FileDescriptorProtoSchema, {
    name: "google/rpc/error_details.proto",
    package: "google.rpc",
    syntax: "proto3",
    messageType: [
      {
        name: "BadRequest",
        field: [
          {
            name: "field_violations",
            number: 1,
            jsonName: "fieldViolations",
            label: FieldDescriptorProto_Label.REPEATED,
            type: FieldDescriptorProto_Type.MESSAGE,
            typeName: ".google.rpc.BadRequest.FieldViolation",
          },
        ],
        nestedType: [{ name: "FieldViolation", field: [string("field", 1, "field"), string("description", 2, "description")] }],
      },
    ],
  });
}
