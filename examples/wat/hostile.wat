;; Hostile guests for the limit tests, hand-written so they instantiate in microseconds.
;; Each export misbehaves in one way; `add` and `count` are the well-behaved calls that must
;; still work after a misbehaving one (`count` also shows whether an instance is reused).
;; It imports the few WASI 0.2 functions it needs to write to stdout and stderr.
(component $hostile
  (import "wasi:io/error@0.2.0" (instance $io-error
    (export "error" (type (sub resource)))))
  (alias export $io-error "error" (type $error))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer $hostile $error (type $error'))
    (export "error" (type $e (eq $error')))
    (export "output-stream" (type $os (sub resource)))
    (type $stream-error' (variant (case "last-operation-failed" (own $e)) (case "closed")))
    (export "stream-error" (type $stream-error (eq $stream-error')))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $os)) (param "contents" (list u8)) (result (result (error $stream-error)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer $hostile $output-stream (type $os'))
    (export "output-stream" (type $os (eq $os')))
    (export "get-stdout" (func (result (own $os))))))
  (import "wasi:cli/stderr@0.2.0" (instance $stderr
    (alias outer $hostile $output-stream (type $os'))
    (export "output-stream" (type $os (eq $os')))
    (export "get-stderr" (func (result (own $os))))))

  ;; The memory lives in its own instance so that the WASI functions can be lowered with it
  ;; before the main module (which imports them) is instantiated.
  (core module $Memory (memory (export "mem") 1))
  (core instance $memory (instantiate $Memory))
  (core func $get-stdout (canon lower (func $stdout "get-stdout")))
  (core func $get-stderr (canon lower (func $stderr "get-stderr")))
  (core func $write (canon lower (func $streams "[method]output-stream.blocking-write-and-flush")
    (memory (core memory $memory "mem"))))
  (core func $drop (canon resource.drop $output-stream))

  (core module $Main
    (import "host" "mem" (memory 1))
    (import "host" "get-stdout" (func $get-stdout (result i32)))
    (import "host" "get-stderr" (func $get-stderr (result i32)))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "drop" (func $drop (param i32)))
    (global $calls (mut i32) (i32.const 0))
    (data (i32.const 64) "out of memory\n")
    (func (export "add") (param i32 i32) (result i32)
      (i32.add (local.get 0) (local.get 1)))
    ;; How many times this instance was called: 1 in a fresh instance, more in a reused one.
    (func (export "count") (result i32)
      (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
      (global.get $calls))
    ;; Grows memory 1 MiB at a time until the host refuses, then reports and traps, as a
    ;; guest whose allocator fails would.
    (func (export "memory-bomb") (result i32)
      (local $err i32)
      (block $refused
        (loop $grow
          (br_if $refused (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
          (br $grow)))
      (local.set $err (call $get-stderr))
      (call $write (local.get $err) (i32.const 64) (i32.const 14) (i32.const 128))
      unreachable)
    (func $recurse (export "deep-recursion") (param $depth i32) (result i32)
      (i32.add (call $recurse (i32.add (local.get $depth) (i32.const 1))) (i32.const 1)))
    ;; Endless work: stopped by fuel when the tool has some, by the timeout otherwise.
    (func (export "fuel-burn") (result i32)
      (local $x i32)
      (loop $l
        (local.set $x (i32.add (local.get $x) (i32.const 1)))
        (br $l))
      (local.get $x))
    ;; Writes `kib` KiB of 'x' to stdout in 4 KiB chunks (WASI's per-call maximum).
    (func (export "stdout-flood") (param $kib i32) (result i32)
      (local $out i32) (local $n i32)
      (memory.fill (i32.const 4096) (i32.const 120) (i32.const 4096))
      (local.set $out (call $get-stdout))
      (block $done
        (loop $chunk
          (br_if $done (i32.ge_u (local.get $n) (i32.div_u (local.get $kib) (i32.const 4))))
          (call $write (local.get $out) (i32.const 4096) (i32.const 4096) (i32.const 128))
          (br_if $done (i32.load8_u (i32.const 128)))  ;; result is err: the stream is gone
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $chunk)))
      (call $drop (local.get $out))
      (i32.mul (local.get $n) (i32.const 4))))
  (core instance $main (instantiate $Main
    (with "host" (instance
      (export "mem" (memory $memory "mem"))
      (export "get-stdout" (func $get-stdout))
      (export "get-stderr" (func $get-stderr))
      (export "write" (func $write))
      (export "drop" (func $drop))))))

  (func (export "add") (param "a" s32) (param "b" s32) (result s32) (canon lift (core func $main "add")))
  (func (export "count") (result u32) (canon lift (core func $main "count")))
  (func (export "memory-bomb") (result u32) (canon lift (core func $main "memory-bomb")))
  (func (export "deep-recursion") (param "depth" u32) (result u32) (canon lift (core func $main "deep-recursion")))
  (func (export "fuel-burn") (result u32) (canon lift (core func $main "fuel-burn")))
  (func (export "stdout-flood") (param "kib" u32) (result u32) (canon lift (core func $main "stdout-flood")))
)
