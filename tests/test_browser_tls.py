"""The demo over https in headless Chromium: the test CA trusted by its key's SPKI hash, the
sign-in flow completed, every page answered with HSTS."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import expect

from gateway.tls_config import TlsConfig
from tests.support.browser import WAIT_MS, chromium, demo_stack, path_and_next, shot, sign_in
from tests.support.certs import write_pair

EMAIL = "ada@example.com"
expect.set_options(timeout=WAIT_MS)


def spki_hash(cert_file: Path) -> str:
    """What --ignore-certificate-errors-spki-list takes: base64 SHA-256 of the leaf's key."""
    leaf = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def test_demo_sign_in_over_https(tmp_path: Path) -> None:
    """Chromium loads the demo over https, is sent to sign in, signs in and sees the dashboard."""
    pair = write_pair(trustme.CA(), tmp_path, "demo")
    tls = TlsConfig(cert_file=str(pair.cert_file), key_file=str(pair.key_file), watch=False)
    trust = f"--ignore-certificate-errors-spki-list={spki_hash(pair.cert_file)}"
    async with demo_stack(tls=tls) as stack, chromium(args=(trust,)) as browser:
        page = await browser.new_page(base_url=stack.url)
        response = await page.goto("/dashboard")
        assert response is not None and response.status == 200
        assert response.headers["strict-transport-security"] == "max-age=31536000"
        assert page.url.startswith("https://")
        assert path_and_next(page.url) == ("/login", ["/dashboard"])
        await sign_in(page, EMAIL, "Ada Lovelace")
        await page.wait_for_url(f"{stack.url}/dashboard")
        await expect(page.locator("main")).to_contain_text(f"Signed in as {EMAIL}")
        await shot(page, "tls-01-dashboard-over-https")
        await page.close()
