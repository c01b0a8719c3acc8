;; A WASI command module (core wasm32-wasi, kind = "command") written by hand: it copies stdin
;; to stdout, so the tool's result is its JSON arguments. No libc: what it costs per call is the
;; sandbox's own overhead (a fresh Store with WASI streams, instantiate, _start), which the
;; bench compares with the C example (examples/wordcount). Serve it with
;;   [[components]]
;;   name = "echo"
;;   kind = "command"
;;   path = "wat/echo.wat"
;;   input_schema = { type = "object" }
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local $n i32)
    ;; One iovec at 0: a 64 KiB buffer at 1024; the count read lands at 8.
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $more
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (local.get $n) (then
        ;; Write what was read: an iovec at 16 over the same buffer, the count written at 24.
        (i32.store (i32.const 16) (i32.const 1024))
        (i32.store (i32.const 20) (local.get $n))
        (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
        (br $more))))))
