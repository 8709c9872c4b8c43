"""Sends one raw HTTPS request to the atrest API and prints what came back.

Usage: raw_request.py PORT METHOD PATH [options]
  --body TEXT         the body, sent as is (default: empty)
  --body-size N       a body of N bytes of 'x' (for size limits)
  --header K:V        an extra header (repeatable)
  --if-match-from P   GET path P first, then send its ETag as If-Match (twice with --twice)
  --twice             send the request two times on the same connection
  --stall-headers S   send a partial request head, wait S seconds, report whether the
                      server closed the connection meanwhile
  --idle S            send the request, then stay idle on the kept-alive connection for up
                      to S seconds and report whether the server closed it

Prints, per answer, three lines: the status, the ETag (or '-') and the body on one line.
Talks to 127.0.0.1 only; accepts the server's self-signed certificate.
"""
import argparse
import http.client
import socket
import ssl
import sys
import time


def context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def show(resp):
    body = resp.read().decode('utf-8', 'replace').replace('\n', ' ')
    print(resp.status)
    print(resp.getheader('ETag') or '-')
    print(body)
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('port', type=int)
    p.add_argument('method')
    p.add_argument('path')
    p.add_argument('--body', default=None)
    p.add_argument('--body-size', type=int, default=None)
    p.add_argument('--header', action='append', default=[])
    p.add_argument('--if-match-from', default=None)
    p.add_argument('--twice', action='store_true')
    p.add_argument('--stall-headers', type=float, default=None)
    p.add_argument('--idle', type=float, default=None)
    a = p.parse_args()

    if a.stall_headers is not None or a.idle is not None:
        raw = socket.create_connection(('127.0.0.1', a.port), timeout=30)
        s = context().wrap_socket(raw, server_hostname='localhost')
        if a.idle is not None:
            req = 'GET %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n' % a.path
            s.sendall(req.encode())
            answer = s.recv(65536)
            print(answer.split(b'\r\n', 1)[0].decode())
            wait = a.idle
        else:
            s.sendall(b'GET /v1/session/who-am-i HTTP/1.1\r\nHost: localhost\r\n')
            wait = a.stall_headers
        s.settimeout(wait)
        start = time.monotonic()
        try:
            data = s.recv(65536)
            # Some servers answer 408 before closing; either way the connection ends.
            while data:
                data = s.recv(65536)
            print('closed after %.1f s' % (time.monotonic() - start))
        except (socket.timeout, TimeoutError):
            print('still open after %.1f s' % (time.monotonic() - start))
        except (ConnectionResetError, ssl.SSLError):
            print('closed after %.1f s' % (time.monotonic() - start))
        return

    conn = http.client.HTTPSConnection('127.0.0.1', a.port, context=context(), timeout=30)
    headers = {'Content-Type': 'application/json'}
    for h in a.header:
        k, v = h.split(':', 1)
        headers[k.strip()] = v.strip()
    if a.if_match_from:
        conn.request('GET', a.if_match_from, headers=dict(headers))
        first = conn.getresponse()
        first.read()
        headers['If-Match'] = first.getheader('ETag')
    body = a.body.encode() if a.body is not None else b''
    if a.body_size is not None:
        body = b'x' * a.body_size
    for _ in range(2 if a.twice else 1):
        try:
            conn.request(a.method, a.path, body=body, headers=headers)
            show(conn.getresponse())
        except (ConnectionResetError, BrokenPipeError) as e:
            print('connection error: %s' % e)
            return


if __name__ == '__main__':
    main()
