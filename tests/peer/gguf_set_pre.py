#!/usr/bin/env python3
"""gguf_set_pre.py IN.gguf OUT.gguf PRE - copies a vocabulary-only GGUF (no
tensors) with tokenizer.ggml.pre set to PRE, for running llama.cpp's
tokenizer with another pre-tokenizer over the same vocabulary. The tests
build the same file with shardlm's GGUF writer."""
import struct
import sys


def main():
    src, dst, pre = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    f = open(src, 'rb').read()
    assert f[:4] == b'GGUF'
    ver, nt, nkv = struct.unpack_from('<IQQ', f, 4)
    assert nt == 0, 'tensors are not copied'
    o = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(t):
        nonlocal o
        if t == 8:
            n, = struct.unpack_from('<Q', f, o)
            o += 8 + n
        elif t == 9:
            et, n = struct.unpack_from('<IQ', f, o)
            o += 12
            for _ in range(n):
                skip(et)
        else:
            o += sizes[t]

    kvs = []
    for _ in range(nkv):
        start = o
        n, = struct.unpack_from('<Q', f, o)
        key = f[o + 8:o + 8 + n]
        o += 8 + n
        t, = struct.unpack_from('<I', f, o)
        o += 4
        skip(t)
        if key != b'tokenizer.ggml.pre':
            kvs.append(f[start:o])
    k = b'tokenizer.ggml.pre'
    kvs.append(struct.pack('<Q', len(k)) + k + struct.pack('<IQ', 8, len(pre)) + pre)
    out = b'GGUF' + struct.pack('<IQQ', ver, 0, len(kvs)) + b''.join(kvs)
    out += b'\0' * (-len(out) % 32)
    open(dst, 'wb').write(out)


main()
