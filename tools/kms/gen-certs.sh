#!/usr/bin/env bash
# Makes the certificates a KMIP test server and its clients use, with the openssl CLI, in DIR:
#   ca.pem ca.key                       test CA (EC P-256)
#   server.pem server.key               server cert, SAN IP:127.0.0.1 and DNS:localhost
#   client.pem client.key               client cert, CN=atrest-node, extendedKeyUsage=clientAuth
#   client-other.pem client-other.key   a second client identity (CN=atrest-other), same CA
#   other-ca.pem other-ca.key           an unrelated CA
#   client-foreign.pem client-foreign.key   client cert issued by the unrelated CA
#   client-expired.pem client-expired.key   client cert of the test CA that expired in 2020
#   server-wrongname.pem server-wrongname.key   server cert for DNS:wrong.invalid only
# Every key is EC P-256: PyKMIP's TLS 1.2 cipher list has ECDHE-ECDSA but not ECDHE-RSA-GCM.
# Usage: tools/kms/gen-certs.sh DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
mkdir -p "$1"
dir=$(cd "$1" && pwd)
cd "$dir"
umask 077

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

# make_ca NAME CN
make_ca() {
  newkey "$1"
  openssl req -x509 -new -key "$1.key" -sha256 -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.pem"
}

# issue NAME CA CN EXTENSIONS [DAYS]: a leaf certificate signed by CA.
issue() {
  local name=$1 ca=$2 cn=$3 ext=$4 days=${5:-825}
  newkey "$name"
  openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
  printf '%b\n' "$ext" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial \
    -sha256 -days "$days" -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

server_ext='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth'
client_ext='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'

make_ca ca "atrest test CA"
issue server ca "127.0.0.1" "$server_ext\nsubjectAltName=IP:127.0.0.1,DNS:localhost"
issue client ca "atrest-node" "$client_ext"
issue client-other ca "atrest-other" "$client_ext"
issue server-wrongname ca "wrong.invalid" "$server_ext\nsubjectAltName=DNS:wrong.invalid"

make_ca other-ca "atrest unrelated CA"
issue client-foreign other-ca "atrest-node" "$client_ext"

# An expired client certificate: `openssl ca` is the CLI that takes explicit start and end
# dates on OpenSSL 3.0, and it needs a small database of its own.
newkey client-expired
openssl req -new -key client-expired.key -subj "/CN=atrest-node" -out client-expired.csr
mkdir -p expired-ca
: > expired-ca/index.txt
cat > expired-ca/ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = $dir/expired-ca/index.txt
new_certs_dir = $dir/expired-ca
serial = $dir/expired-ca/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
x509_extensions = leaf
[any]
commonName = supplied
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
CNF
echo 1000 > expired-ca/serial
openssl ca -batch -notext -config expired-ca/ca.cnf -cert ca.pem -keyfile ca.key \
  -startdate 20190101000000Z -enddate 20200101000000Z -in client-expired.csr \
  -out client-expired.pem 2>/dev/null
rm -rf client-expired.csr expired-ca

chmod 0644 ./*.pem
chmod 0600 ./*.key
echo "$dir"
