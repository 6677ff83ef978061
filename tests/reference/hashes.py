#!/usr/bin/env python3
"""Reference hashes, in upstream's own Python: taoverse get_hash_of_file, get_hash_of_directory,
get_hash_of_two_strings (macrocosm-os/taoverse src/taoverse/model/storage/disk/utils.py and
model/utils.py) and SoundsRight get_directory_content_hash (soundsright/base/models/validation.py),
unchanged but for layout. Used by the tests (tests/tests/hashes.rs) and scripts/bench-hash.

usage: hashes.py DIR HOTKEY [--taoverse-only]
  prints model hash, secure hash and (unless --taoverse-only) content hash, one per line
"""
import base64, hashlib, os, sys

def get_hash_of_file(path):
    blocksize = 64 * 1024
    file_hash = hashlib.sha256()
    with open(path, "rb") as fp:
        while True:
            data = fp.read(blocksize)
            if not data:
                break
            file_hash.update(data)
    return base64.b64encode(file_hash.digest()).decode("utf-8")

def get_hash_of_directory(path):
    dir_hash = hashlib.sha256()
    for cur_path, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for filename in sorted(filenames):
            file_hash = get_hash_of_file(os.path.join(cur_path, filename))
            dir_hash.update(file_hash.encode())
    return base64.b64encode(dir_hash.digest()).decode("utf-8")

def get_hash_of_two_strings(string1, string2):
    string_hash = hashlib.sha256((string1 + string2).encode())
    return base64.b64encode(string_hash.digest()).decode("utf-8")

def get_directory_content_hash(directory):
    hash_obj = hashlib.sha256()
    excluded_dirs = {'.git'}
    excluded_files = {'.lock', '.metadata'}
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d not in excluded_dirs]
        dirs.sort()  # upstream leaves this to the filesystem; see hash.rs
        for file_name in sorted(files):
            if file_name in excluded_files:
                continue
            file_path = os.path.join(root, file_name)
            rel_path = os.path.relpath(file_path, directory).replace(os.sep, '/')
            hash_obj.update(rel_path.encode())
            with open(file_path, "rb") as f:
                hash_obj.update(f.read())
    return base64.b64encode(hash_obj.digest()).decode()

if __name__ == "__main__":
    d, hotkey = sys.argv[1], sys.argv[2]
    h = get_hash_of_directory(d)
    print(h)
    print(get_hash_of_two_strings(h, hotkey))
    if sys.argv[3:] != ["--taoverse-only"]:
        print(get_directory_content_hash(d))
