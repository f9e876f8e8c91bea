"""Writes one FileDescriptorSet holding every .proto file compiled into a wheel of generated
Python code (such as xds-protos, Envoy's data-plane API). Each generated *_pb2.py module carries
its file's serialized FileDescriptorProto as the bytes literal given to AddSerializedFile; this
reads those literals with the ast module, so nothing from the wheel is imported or run, and
nothing but the standard library is needed.

usage: python3 descriptor-set.py WHEEL OUT
"""
import ast
import sys
import zipfile


def serialized_file(source: str) -> bytes | None:
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return node.args[0].value
    return None


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def main(wheel: str, out: str) -> None:
    files = []
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            if not name.endswith("_pb2.py"):
                continue
            data = serialized_file(z.read(name).decode("utf-8"))
            if data is None:
                raise SystemExit(f"{name}: no AddSerializedFile call; is this generated protobuf code?")
            files.append(data)
    if not files:
        raise SystemExit(f"{wheel}: no generated *_pb2.py modules")
    with open(out, "wb") as f:
        for data in files:
            # FileDescriptorSet.file is field 1, length-delimited.
            f.write(b"\x0a" + varint(len(data)) + data)
    print(f"{len(files)} files")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
