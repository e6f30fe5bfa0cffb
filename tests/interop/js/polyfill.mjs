// js-libp2p 3.x uses Promise.withResolvers, which Node gained in v22; this machine has Node 20.
// Loaded with `node --import ./polyfill.mjs`, before any libp2p module.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => {
      resolve = res
      reject = rej
    })
    return { promise, resolve, reject }
  }
}
