//! Signing keys made at test time by the `openssl` command (no private key is kept in the
//! repository), with their public PEM and JWK, and a helper to sign tokens with them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

/// An RS256 or ES256 key pair.
pub struct SigningKey {
    pub alg: Algorithm,
    pub public_pem: String,
    private_pem: String,
    /// The JWK members that describe the public key (`kty` and `n`/`e` or `crv`/`x`/`y`).
    public_jwk: Value,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key (RS256).
    pub fn rsa() -> Self {
        let private_pem = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], b"");
        let public_pem = openssl(&["pkey", "-pubout"], private_pem.as_bytes());
        let modulus = openssl(&["rsa", "-pubin", "-noout", "-modulus"], public_pem.as_bytes());
        let modulus = modulus.trim().strip_prefix("Modulus=").expect("openssl prints Modulus=");
        let n = hex::decode(modulus).expect("hex modulus");
        // `genpkey` uses the public exponent 65537.
        let public_jwk = json!({ "kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB" });
        Self { alg: Algorithm::RS256, public_pem, private_pem, public_jwk }
    }

    /// A fresh EC key on P-256 (ES256).
    pub fn ec_p256() -> Self {
        let private_pem = openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], b"");
        let public_pem = openssl(&["pkey", "-pubout"], private_pem.as_bytes());
        let der = openssl_bytes(&["pkey", "-pubin", "-outform", "DER"], public_pem.as_bytes());
        // The SubjectPublicKeyInfo ends with the uncompressed point: 0x04 ‖ x ‖ y.
        let point = &der[der.len() - 65..];
        assert_eq!(point[0], 0x04, "uncompressed EC point");
        let public_jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        Self { alg: Algorithm::ES256, public_pem, private_pem, public_jwk }
    }

    /// The public key as a JWK with `kid` and `alg`.
    pub fn jwk(&self, kid: &str) -> Value {
        let mut jwk = self.public_jwk.clone();
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(format!("{:?}", self.alg));
        jwk["use"] = json!("sig");
        jwk
    }

    /// The public key as a JWK without `alg` (the verifier goes by `kty`).
    pub fn jwk_without_alg(&self, kid: &str) -> Value {
        let mut jwk = self.public_jwk.clone();
        jwk["kid"] = json!(kid);
        jwk
    }

    /// `claims` signed with this key under its algorithm, with `kid` in the header when given.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        self.sign_with_header(&header, claims)
    }

    /// `claims` signed with this key under whatever `header` says.
    pub fn sign_with_header(&self, header: &Header, claims: &Value) -> String {
        let key = match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.private_pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()),
        }
        .expect("encoding key");
        jsonwebtoken::encode(header, claims, &key).expect("signed")
    }
}

fn openssl(args: &[&str], stdin: &[u8]) -> String {
    String::from_utf8(openssl_bytes(args, stdin)).expect("utf-8 from openssl")
}

fn openssl_bytes(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the `openssl` command is needed to make test keys");
    child.stdin.take().expect("stdin").write_all(stdin).expect("stdin written");
    let out = child.wait_with_output().expect("openssl ran");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A token's parts encoded by hand (for headers no library would write).
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}
