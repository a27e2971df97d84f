"""The sandbox's identities: generated once, kept in the data dir, and the credentials it hands out."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import crypto


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class SandboxKeys:
    """Every key pair, id and secret of the sandbox's two providers."""

    mchid: str
    appid: str
    merchant_serial_no: str
    merchant_private_pem: str
    platform_serial_no: str
    platform_private_pem: str
    apiv3_key: str
    alipay_app_id: str
    alipay_seller_id: str
    app_private_pem: str
    alipay_private_pem: str

    @classmethod
    def generate(cls) -> SandboxKeys:
        """Make fresh keys and ids in the providers' shapes."""
        digits = lambda n: "".join(secrets.choice("0123456789") for _ in range(n))
        return cls(
            mchid="19" + digits(8),
            appid="wx" + secrets.token_hex(8),
            merchant_serial_no=secrets.token_hex(20).upper(),
            merchant_private_pem=crypto.private_pem(crypto.new_key()),
            platform_serial_no="PUB_KEY_ID_" + digits(28),
            platform_private_pem=crypto.private_pem(crypto.new_key()),
            apiv3_key=secrets.token_urlsafe(24)[:32],
            alipay_app_id="2021" + digits(12),
            alipay_seller_id="2088" + digits(12),
            app_private_pem=crypto.private_pem(crypto.new_key()),
            alipay_private_pem=crypto.private_pem(crypto.new_key()),
        )

    @classmethod
    def load_or_create(cls, data_dir: Path) -> SandboxKeys:
        """Load ``keys.json`` from the data dir, generating and saving it on first start."""
        path = data_dir / "keys.json"
        if path.exists():
            return cls(**json.loads(path.read_text()))
        keys = cls.generate()
        write_private(path, json.dumps(keys.__dict__, indent=1))
        return keys

    def merchant_public(self) -> rsa.RSAPublicKey:
        """The merchant's public key, which WeChat holds to check request signatures."""
        return crypto.load_private(self.merchant_private_pem).public_key()

    def app_public(self) -> rsa.RSAPublicKey:
        """The Alipay app's public key, uploaded to Alipay to check request signatures."""
        return crypto.load_private(self.app_private_pem).public_key()

    def credentials(self, base_url: str) -> dict[str, Any]:
        """Return what a store admin pastes into the coordinator's provider settings."""
        return {
            "wechatpay": {
                "provider": "wechatpay",
                "mchid": self.mchid,
                "appid": self.appid,
                "merchant_serial_no": self.merchant_serial_no,
                "merchant_private_key": self.merchant_private_pem,
                "apiv3_key": self.apiv3_key,
                "platform_serial_no": self.platform_serial_no,
                "platform_public_key": crypto.public_pem(crypto.load_private(self.platform_private_pem)),
                "base_url": base_url,
            },
            "alipay": {
                "provider": "alipay",
                "app_id": self.alipay_app_id,
                "app_private_key": self.app_private_pem,
                "alipay_public_key": crypto.public_pem(crypto.load_private(self.alipay_private_pem)),
                "gateway_url": base_url + "/gateway.do",
                "seller_id": self.alipay_seller_id,
            },
        }
