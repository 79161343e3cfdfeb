#!/usr/bin/env python3
"""gen_stress.py - writes tests/data/bpe-stress.inp: pre-tokenizer stress
strings (contractions, digits, every kind of whitespace, punctuation,
combining marks, scripts, emoji, control and private-use codepoints, long
runs, special-token look-alikes) in the .inp format of llama.cpp's vocab
tests. Their expected ids come from llama.cpp (tests/peer/tokenizer_xcheck.sh).
Codepoints assigned after Unicode 14.0 are left out: llama.cpp's tables are
newer than Python 3.11's (see scripts/gen-unicode-tables.py --check)."""
import sys

S = [
    "'S 'T 'Re 'vE 'LL 'd 'x 'M", "don't DON'T it'S we'Ll ''s '''ll", "\u2019s it\u2019s",
    "1234567890", "x1y22z333w4444v55555", "3.14159 1,000,000", "\u0661\u0662\u0663 \u0664\u0665\u0666",
    "\u216b \u00bd \u00b2\u00b3 \u2460\u2461", "abc123def 12abc",
    "\u3000x\u3000\u3000y", "\u00a0x \u00a0 \u00a0", "a \u2003 b", "\r\n\r\nx", " \r\n x", "\t\t\tx",
    "  \n\t \n  y", "x   ", "x\u2028y\u2029z", "a\x0b\x0cb\x1c\x1d\x1e\x1fc", "\u0085x \u0085",
    "$+<=>^~|`", "\u00ab\u00bb \u201e\u201c\u201d", "...!!??", "#include <stdio.h>", "a->b && c||d",
    "@user #tag", "_under_score_", "\u00a9\u00ae\u2122", " !x ! x !\n!", "x (\n\n)",
    "e\u0301", "\u0301\u0301a", "\u0e01\u0e48\u0e2d\u0e19", "\u0939\u093f\u0928\u094d\u0926\u0940",
    "x\u0300\u0300 y \u0300", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u4e2d\u6587\uff0c\u6807\u70b9\u3002", "\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1e9\U0001f1ea",
    "\x00\x01a\x7f", "a\u200bb", "\ufeffBOM", "\ue000 \U0010fffd", "x\u0378y",
    "def f(x):\n    return x**2  # square\n", "a" * 300, " " * 50 + "x", "\n" * 20, "1" * 40, "!" * 30,
    "\u00c4\u00d6\u00dc\u00e4\u00f6\u00fc\u00df", "\u0391\u0392\u0393 \u03b1\u03b2\u03b3",
    "\u041f\u0420\u0418\u0412\u0415\u0422 \u043c\u0438\u0440",
    "<|im_start|>user\nHi<|im_end|>", "</s> <s>", "[PAD151650]x [PAD151650] y", "a</s>  b",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "  \u00a0\u3000 \t x",
]

sys.stdout.buffer.write(b"".join(s.encode("utf-8") + b"\n__ggml_vocab_test__\n" for s in S))
