"""A gRPC client for the proxy tests (Debian's python3-grpcio): calls through the
proxy at TARGET (host:port) with raw-bytes (de)serializers and prints one `… ok` line
per check that passed; exits 1 on the first failure, naming it.
"""
import sys

import grpc


def identity(b):
    return b


def expect(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def error_of(call):
    try:
        call()
    except grpc.RpcError as e:
        return e
    return None


def main(target):
    with grpc.insecure_channel(target) as channel:
        unary = channel.unary_unary(
            "/echo.Echo/Unary", request_serializer=identity, response_deserializer=identity
        )
        reply, call = unary.with_call(b"hello", timeout=10)
        expect(reply == b"hello", f"unary echo: {reply!r}")
        trailers = dict(call.trailing_metadata() or ())
        expect(trailers.get("x-trailer") == "t1", f"unary trailers: {trailers!r}")
        print("unary ok", flush=True)

        stream = channel.unary_stream(
            "/echo.Echo/Stream", request_serializer=identity, response_deserializer=identity
        )
        got = list(stream(b"m", timeout=10))
        expect(got == [b"m-0", b"m-1", b"m-2"], f"server streaming: {got!r}")
        print("streaming ok", flush=True)

        fail = channel.unary_unary(
            "/echo.Echo/Fail", request_serializer=identity, response_deserializer=identity
        )
        e = error_of(lambda: fail(b"x", timeout=10))
        expect(e is not None, "Fail did not fail")
        expect(e.code() == grpc.StatusCode.NOT_FOUND, f"Fail: {e.code()} {e.details()!r}")
        expect(e.details() == "nope", f"Fail details: {e.details()!r}")
        print("upstream status ok", flush=True)

        none = channel.unary_unary(
            "/nothing.Here/Call", request_serializer=identity, response_deserializer=identity
        )
        e = error_of(lambda: none(b"x", timeout=10))
        expect(e is not None, "no route did not fail")
        expect(
            e.code() == grpc.StatusCode.UNIMPLEMENTED and e.details(),
            f"no route: {e.code()} {e.details()!r}",
        )
        print(f"no route ok: {e.details()}", flush=True)

        dead = channel.unary_unary(
            "/dead.Dead/Call", request_serializer=identity, response_deserializer=identity
        )
        e = error_of(lambda: dead(b"x", timeout=10))
        expect(e is not None, "dead upstream did not fail")
        expect(
            e.code() == grpc.StatusCode.UNAVAILABLE and e.details(),
            f"dead upstream: {e.code()} {e.details()!r}",
        )
        print(f"dead upstream ok: {e.details()}", flush=True)

        empty = channel.unary_unary(
            "/empty.Empty/Call", request_serializer=identity, response_deserializer=identity
        )
        e = error_of(lambda: empty(b"x", timeout=10))
        expect(e is not None, "no instances did not fail")
        expect(
            e.code() == grpc.StatusCode.UNAVAILABLE and e.details(),
            f"no instances: {e.code()} {e.details()!r}",
        )
        print(f"no instances ok: {e.details()}", flush=True)

        slow = channel.unary_unary(
            "/echo.Echo/Slow", request_serializer=identity, response_deserializer=identity
        )
        e = error_of(lambda: slow(b"x", timeout=10))
        expect(e is not None, "route timeout did not fail")
        expect(
            e.code() == grpc.StatusCode.UNAVAILABLE and e.details(),
            f"route timeout: {e.code()} {e.details()!r}",
        )
        print(f"route timeout ok: {e.details()}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
