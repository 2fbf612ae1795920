// Server reflection descriptors that grpcurl (and every Go-based client) accepts.
//
// @grpc/reflection serves the FileDescriptorProtos found in a proto-loader
// package definition. Those descriptors, made by protobufjs, are not valid
// for protobuf-go (grpcurl's `describe`, and calls with JSON bodies, fail):
// they list no `dependency` files (grpc-node issues #2595, #3034), they keep
// type references relative ("common.v1.Money"), and they name map entries
// after the field ("Statuses" instead of "StatusesEntry"). `repairDescriptors`
// fixes exactly these three things, with @bufbuild/protobuf's descriptor
// types, before the definition is handed to ReflectionService.

import { fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type FieldDescriptorProto,
  FieldDescriptorProto_Type,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import type { PackageDefinition } from "@grpc/proto-loader";

type SymbolKind = "message" | "enum";

interface SymbolEntry {
  readonly file: string;
  readonly kind: SymbolKind;
}

/** protoc's name for the entry message of map field `name`: `foo_bar` -> `FooBarEntry`. */
export function mapEntryName(fieldName: string): string {
  let result = "";
  let upper = true;
  for (const char of fieldName) {
    if (char === "_") {
      upper = true;
    } else {
      result += upper ? char.toUpperCase() : char;
      upper = false;
    }
  }
  return `${result}Entry`;
}

function renameMapEntries(message: DescriptorProto, scope: string): void {
  for (const nested of message.nestedType) {
    if (nested.options?.mapEntry === true) {
      const field = message.field.find((f) => f.typeName === nested.name || f.typeName.endsWith(`.${nested.name}`));
      if (field !== undefined) {
        nested.name = mapEntryName(field.name);
        field.typeName = `${scope}.${nested.name}`;
      }
    }
    renameMapEntries(nested, `${scope}.${nested.name}`);
  }
}

function indexMessages(
  messages: readonly DescriptorProto[],
  scope: string,
  file: string,
  index: Map<string, SymbolEntry>,
): void {
  for (const message of messages) {
    const name = `${scope}.${message.name}`;
    index.set(name, { file, kind: "message" });
    for (const nestedEnum of message.enumType) {
      index.set(`${name}.${nestedEnum.name}`, { file, kind: "enum" });
    }
    indexMessages(message.nestedType, name, file, index);
  }
}

/** Protobuf's scoping rule: look in `scope`, then in each enclosing scope outwards. */
function resolve(reference: string, scope: string, index: ReadonlyMap<string, SymbolEntry>): string | undefined {
  if (reference.startsWith(".")) {
    return index.has(reference) ? reference : undefined;
  }
  for (let current = scope; ; current = current.slice(0, Math.max(current.lastIndexOf("."), 0))) {
    const candidate = `${current}.${reference}`;
    if (index.has(candidate)) {
      return candidate;
    }
    if (current === "") {
      return undefined;
    }
  }
}

function packageScope(file: FileDescriptorProto): string {
  return file.package === "" ? "" : `.${file.package}`;
}

/**
 * The file descriptors of `definition`, repaired (see the top of this file),
 * plus `extraFiles`, as a package definition for ReflectionService, which
 * reads nothing else.
 */
export function reflectionDefinition(
  definition: PackageDefinition,
  extraFiles: readonly FileDescriptorProto[] = [],
): PackageDefinition {
  const files = new Map<string, FileDescriptorProto>(extraFiles.map((file) => [file.name, file]));
  for (const entry of Object.values(definition)) {
    // Service entries carry no descriptors; message and enum entries do.
    const protos: readonly Buffer[] = "fileDescriptorProtos" in entry ? (entry.fileDescriptorProtos as Buffer[]) : [];
    for (const bytes of protos) {
      const file = fromBinary(FileDescriptorProtoSchema, bytes);
      if (!files.has(file.name)) {
        files.set(file.name, file);
      }
    }
  }

  const index = new Map<string, SymbolEntry>();
  for (const file of files.values()) {
    const scope = packageScope(file);
    for (const message of file.messageType) {
      renameMapEntries(message, `${scope}.${message.name}`);
    }
    indexMessages(file.messageType, scope, file.name, index);
    for (const enumType of file.enumType) {
      index.set(`${scope}.${enumType.name}`, { file: file.name, kind: "enum" });
    }
  }

  for (const file of files.values()) {
    const dependencies = new Set<string>();
    const link = (reference: string, scope: string): string => {
      const resolved = resolve(reference, scope, index);
      if (resolved === undefined) {
        throw new Error(`reflection: cannot resolve type '${reference}' used in ${file.name}`);
      }
      const target = index.get(resolved);
      if (target !== undefined && target.file !== file.name) {
        dependencies.add(target.file);
      }
      return resolved;
    };
    const linkFields = (fields: readonly FieldDescriptorProto[], scope: string): void => {
      for (const field of fields) {
        if (field.typeName !== "") {
          field.typeName = link(field.typeName, scope);
          field.type =
            index.get(field.typeName)?.kind === "enum"
              ? FieldDescriptorProto_Type.ENUM
              : FieldDescriptorProto_Type.MESSAGE;
        }
      }
    };
    const linkMessages = (messages: readonly DescriptorProto[], scope: string): void => {
      for (const message of messages) {
        const name = `${scope}.${message.name}`;
        linkFields(message.field, name);
        linkMessages(message.nestedType, name);
      }
    };
    const scope = packageScope(file);
    linkMessages(file.messageType, scope);
    for (const service of file.service) {
      for (const method of service.method) {
        method.inputType = link(method.inputType, scope);
        method.outputType = link(method.outputType, scope);
      }
    }
    file.dependency = [...dependencies].sort();
  }

  const fileDescriptorProtos = [...files.values()].map((file) => Buffer.from(toBinary(FileDescriptorProtoSchema, file)));
  // One entry (a message's, for its type) holding every file: ReflectionService
  // indexes the files of all entries, so more would only repeat the work.
  for (const [name, entry] of Object.entries(definition)) {
    if ("fileDescriptorProtos" in entry) {
      return { [name]: Object.assign({}, entry, { fileDescriptorProtos }) };
    }
  }
  return {};
}
