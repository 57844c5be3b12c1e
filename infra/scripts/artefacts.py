"""Zips each built bootstrap as Lambda receives it and prints architecture and sizes."""

import os
import sys
import zipfile

MACHINES = {0x3E: "x86_64", 0xB7: "arm64"}

build = sys.argv[1] if len(sys.argv) > 1 else ".aws-sam/build"
for function in ("WorkerFunction", "ListerFunction", "NotifierFunction"):
    binary = os.path.join(build, function, "bootstrap")
    if not os.path.exists(binary):
        sys.exit(f"{binary} is missing: run sam build first")
    with open(binary, "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF":
        sys.exit(f"{binary} is not an ELF binary")
    machine = MACHINES.get(int.from_bytes(header[18:20], "little"), "unknown")
    archive = os.path.join(os.path.dirname(build), f"{function}.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(binary, "bootstrap")
    print(f"{function:<16} {machine:<7} binary {os.path.getsize(binary):>10,} bytes   zip {os.path.getsize(archive):>10,} bytes   ({archive})")
