"""The lab API's certificates: a CA and a serving certificate, made once per state directory
and kept there (``pki/``), so that in-pod clients verify the API as they verify k3s's.

The API server's certificate names its service address, loopback and the
``kubernetes.default.svc`` names (kubeadm's ``init phase certs apiserver``
defaults, v1.31; k3s signs the same set with its ECDSA P-256 server CA). The
lab's names 127.0.0.1, its in-cluster API address and those names; it is made
again, by the same CA, when an address it must name is missing or it nears its
end."""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The names in-cluster clients may use for the API server.
DNS_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
             "localhost")
CA_DAYS, SERVER_DAYS, RENEW_DAYS = 3650, 365, 90


class Pki:
    def __init__(self, state_dir):
        self.directory = os.path.join(state_dir, "pki")
        self.ca_file = os.path.join(self.directory, "ca.crt")
        self.cert_file = os.path.join(self.directory, "server.crt")
        self.key_file = os.path.join(self.directory, "server.key")

    def ensure(self, addresses):
        """Paths of the CA and of a serving certificate for ``addresses`` (IPs) and DNS_NAMES."""
        os.makedirs(self.directory, exist_ok=True)
        ca_key_file = os.path.join(self.directory, "ca.key")
        if not (os.path.exists(self.ca_file) and os.path.exists(ca_key_file)):
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab-server-ca")])
            builder = _base(name, name, key.public_key(), CA_DAYS).add_extension(
                x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False), critical=True)
            _write(ca_key_file, _key_pem(key))
            _write(self.ca_file, builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
            _remove(self.cert_file)
        if not self._serving_ok(addresses):
            self._serve(ca_key_file, addresses)
        return self.ca_file, self.cert_file, self.key_file

    def _serving_ok(self, addresses):
        try:
            with open(self.cert_file, "rb") as handle:
                cert = x509.load_pem_x509_certificate(handle.read())
            with open(self.ca_file, "rb") as handle:
                ca = x509.load_pem_x509_certificate(handle.read())
        except (OSError, ValueError):
            return False
        named = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        left = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
        return (cert.issuer == ca.subject and left > datetime.timedelta(days=RENEW_DAYS)
                and {ipaddress.ip_address(a) for a in addresses} <= set(named.get_values_for_type(x509.IPAddress)))

    def _serve(self, ca_key_file, addresses):
        with open(ca_key_file, "rb") as handle:
            ca_key = serialization.load_pem_private_key(handle.read(), password=None)
        with open(self.ca_file, "rb") as handle:
            ca = x509.load_pem_x509_certificate(handle.read())
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName(n) for n in DNS_NAMES] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        builder = _base(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), ca.subject,
                        key.public_key(), SERVER_DAYS).add_extension(
            x509.SubjectAlternativeName(names), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        _write(self.key_file, _key_pem(key))
        _write(self.cert_file, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def _base(subject, issuer, public_key, days):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path, data):
    descriptor = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(path + ".tmp", path)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
