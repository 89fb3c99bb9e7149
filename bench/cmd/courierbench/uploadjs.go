//go:build !windows

package main

// uploadJS is the tus-js-client contender: default options (one PATCH per file, as
// Uppy also does), N uploads at a time. It prints one JSON line per file (its upload
// URL) and a last line with the seconds from the first start to the last success.
const uploadJS = `'use strict'
const tus = require('tus-js-client')
const fs = require('fs')
const [endpoint, concArg, listFile] = process.argv.slice(2)
const files = fs.readFileSync(listFile, 'utf8').split('\n').filter(Boolean)
const conc = Number(concArg)
function one (path) {
  return new Promise((resolve, reject) => {
    const size = fs.statSync(path).size
    const u = new tus.Upload(fs.createReadStream(path), {
      endpoint,
      uploadSize: size,
      metadata: { filename: path.split('/').pop() },
      retryDelays: null,
      onError: reject,
      onSuccess: () => resolve(u.url),
    })
    u.start()
  })
}
async function main () {
  const t0 = process.hrtime.bigint()
  let next = 0
  const out = []
  async function worker () {
    while (next < files.length) {
      const i = next++
      out[i] = await one(files[i])
    }
  }
  await Promise.all(Array.from({ length: conc }, worker))
  const secs = Number(process.hrtime.bigint() - t0) / 1e9
  for (let i = 0; i < files.length; i++) console.log(JSON.stringify({ file: files[i], url: out[i] }))
  console.log(JSON.stringify({ seconds: secs }))
}
main().catch((e) => { console.error(String(e)); process.exit(1) })
`
