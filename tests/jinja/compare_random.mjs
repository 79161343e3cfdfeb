// compare_random.mjs - for the random templates: wherever the reference
// renders, shardlm must render the same bytes. Prints the count compared.
//   node compare_random.mjs REF.json OURS.json
import { readFileSync } from "node:fs";
const ref = JSON.parse(readFileSync(process.argv[2], "utf8")), ours = JSON.parse(readFileSync(process.argv[3], "utf8"));
let n = 0, bad = 0;
for (const [k, r] of Object.entries(ref)) {
  if (!("text" in r)) continue;
  n++;
  const o = ours[k];
  if (!o || o.text !== r.text) {
    if (++bad <= 5) console.log(`FAIL ${k}: want ${JSON.stringify(r.text).slice(0, 300)}\n  got ${JSON.stringify(o).slice(0, 300)}`);
  }
}
console.log(`random templates: ${n - bad}/${n} that the reference renders match`);
process.exit(bad || n < 100 ? 1 : 0);
