"""WeCom callback cryptography: wechatpy's AES (``WXBizMsgCrypt``) with our own signature check.

wechatpy compares signatures with ``!=``; here the SHA-1 signature is recomputed and compared with
``hmac.compare_digest`` before wechatpy is asked to decrypt anything. Decryption also checks that
the receive id inside the plaintext is our corp id (wechatpy raises otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto


class WeComCryptoError(Exception):
    """The payload cannot be decrypted (damaged, wrong key, or meant for another corp)."""


def signature(token: str, timestamp: str, nonce: str, data: str) -> str:
    """WeCom's msg_signature: sha1 of the four strings sorted and concatenated."""
    parts = sorted([token, timestamp, nonce, data])
    return hashlib.sha1("".join(parts).encode("utf-8")).hexdigest()


class WeComCrypto:
    def __init__(self, token: str, encoding_aes_key: str, corp_id: str) -> None:
        self.token = token
        self.corp_id = corp_id
        self._wechatpy = WeChatCrypto(token, encoding_aes_key, corp_id)
        self.key = self._wechatpy.key

    def check_signature(self, msg_signature: str, timestamp: str, nonce: str, data: str) -> bool:
        """Constant-time comparison of ``msg_signature`` with the expected one."""
        expected = signature(self.token, timestamp, nonce, data)
        return hmac.compare_digest(expected.encode("ascii"), (msg_signature or "").strip().lower().encode("ascii", "replace"))

    def decrypt(self, encrypted: str) -> str:
        """Plaintext of an ``Encrypt`` value / ``echostr`` (signature checked separately)."""
        try:
            return PrpCrypto(self.key).decrypt(encrypted, self.corp_id)
        except Exception as exc:  # binascii.Error, ValueError, InvalidCorpIdException, UnicodeDecodeError ...
            raise WeComCryptoError(f"{type(exc).__name__}: {exc}") from None

    def encrypt_message(self, xml: str, nonce: str, timestamp: str | int | None = None) -> str:
        """An encrypted, signed ``<xml><Encrypt/><MsgSignature/>…</xml>`` envelope (as WeCom sends
        them, minus ToUserName/AgentID; used by tests and for passive replies)."""
        return self._wechatpy.encrypt_message(xml, nonce, str(timestamp or int(time.time())))

    def encrypt(self, text: str) -> str:
        """The base64 ``Encrypt`` value for ``text``."""
        return PrpCrypto(self.key).encrypt(text, self.corp_id).decode("ascii")


__all__ = ["WeComCrypto", "WeComCryptoError", "signature"]
