"""SHA256withRSA (PKCS#1 v1.5) and AEAD_AES_256_GCM, the primitives both providers publish."""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """Load an RSA private key from PEM (PKCS#8 or PKCS#1), or a bare base64 body as Alipay hands out."""
    key = serialization.load_pem_private_key(_as_pem(pem, "PRIVATE KEY"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("not an RSA private key")
    return key


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """Load an RSA public key from PEM (SubjectPublicKeyInfo) or a bare base64 body."""
    key = serialization.load_pem_public_key(_as_pem(pem, "PUBLIC KEY"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("not an RSA public key")
    return key


def _as_pem(text: str, label: str) -> bytes:
    # Alipay's key tool and open platform show keys as one base64 line without the PEM armour.
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return text.encode()
    body = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Return the base64 SHA256withRSA signature of ``message``."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    """Return whether ``signature_b64`` is a valid SHA256withRSA signature of ``message``."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def aes_gcm_decrypt(key: bytes, nonce: str, associated_data: str, ciphertext_b64: str) -> bytes:
    """Decrypt an AEAD_AES_256_GCM resource; raise ``ValueError`` when it does not authenticate."""
    try:
        return AESGCM(key).decrypt(
            nonce.encode(), base64.b64decode(ciphertext_b64, validate=True), associated_data.encode()
        )
    except InvalidTag as exc:
        raise ValueError("resource does not authenticate") from exc
