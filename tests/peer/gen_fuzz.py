#!/usr/bin/env python3
"""gen_fuzz.py SEED COUNT - writes random strings in the .inp format of
llama.cpp's vocab tests (tests/data/bpe-fuzz.inp is gen_fuzz.py 1 400): half
ASCII (contraction letters and quotes weighted up), the rest non-ASCII
whitespace, special-token texts and codepoints of every general category
assigned in Unicode 14.0 below U+30000. Their expected ids come from
llama.cpp (tests/peer/tokenizer_xcheck.sh)."""
import collections
import random
import sys
import unicodedata

random.seed(int(sys.argv[1]))
bycat = collections.defaultdict(list)
for cp in range(0x30000):
    if 0xD800 <= cp < 0xE000:
        continue
    c = unicodedata.category(chr(cp))
    if c != 'Cn':
        bycat[c].append(cp)
cats = sorted(bycat)
ascii_ = [chr(c) for c in range(0x20, 0x7f)] + list("\n\t\r   ''stSTrelLvdm")
special = ['<|im_start|>', '<|im_end|>', '<|eot_id|>', '<|endoftext|>', '</s>', '<s>', '[PAD151650]', '<|end|>',
           '<|user|>']
ws = ['\u00a0', '\u3000', '\u2003', '\u0085', '\u2028', '\x0b', '\x0c', '\x1c']
out = []
for _ in range(int(sys.argv[2])):
    s = []
    for _ in range(random.randint(1, 40)):
        r = random.random()
        if r < 0.5:
            s.append(random.choice(ascii_))
        elif r < 0.6:
            s.append(random.choice(ws))
        elif r < 0.65:
            s.append(random.choice(special))
        else:
            s.append(chr(random.choice(bycat[random.choice(cats)])))
    out.append(''.join(s))
sys.stdout.buffer.write(b''.join(x.encode('utf-8') + b'\n__ggml_vocab_test__\n' for x in out))
