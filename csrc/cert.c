/* Certificate credentials: a private key and its certificate (PEM, or PKCS#12), and the JWT client
 * assertions (RFC 7523) minted from them for every token request.
 *
 * Loading runs before any request, so that every misuse (a missing file, a wrong password, a key
 * that does not match its certificate, an expired certificate, a key that cannot sign) is a clear
 * error when the client is built. OpenSSL objects held only by C locals are freed before any Lua
 * call; the loaded key and certificate live in the client (pc_cert) and go with it. No message
 * quotes key material or a password. */
#include <errno.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include "pc.h"

void pc_cert_free(pc_cert *c) {
  EVP_PKEY_free(c->key);
  X509_free(c->cert);
  c->key = NULL;
  c->cert = NULL;
}

/* The PEM password callback: the configured password, or a refusal (never a terminal prompt). */
static int password_cb(char *buf, int size, int rwflag, void *u) {
  (void)rwflag;
  const char *pw = u;
  if (pw == NULL) return -1;
  int n = (int)strlen(pw);
  if (n > size) return -1;
  memcpy(buf, pw, (size_t)n);
  return n;
}

static int bad_decrypt(void) {
  unsigned long e;
  int bad = 0;
  while ((e = ERR_get_error()) != 0) {
    int r = ERR_GET_REASON(e);
    if (r == PEM_R_BAD_DECRYPT || r == EVP_R_BAD_DECRYPT || r == PEM_R_BAD_PASSWORD_READ ||
        r == PKCS12_R_MAC_VERIFY_FAILURE)
      bad = 1;
  }
  return bad;
}

static BIO *open_file(const char *path, const char *what, char *err, size_t errlen) {
  errno = 0;
  BIO *b = BIO_new_file(path, "rb");
  if (b == NULL) {
    int e = errno ? errno : ENOENT;
    ERR_clear_error();
    snprintf(err, errlen, "certificate.%s: cannot read '%s' (%s)", what, path, strerror(e));
  }
  return b;
}

static void hex(const unsigned char *p, unsigned n, char *out) {
  static const char digits[] = "0123456789ABCDEF";
  for (unsigned i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

/* Checks what was loaded and computes the thumbprints; NULL or a message. `now` is the client's clock. */
static const char *check(pc_cert *c, double now, char *err, size_t errlen) {
  if (X509_check_private_key(c->cert, c->key) != 1) {
    ERR_clear_error();
    return "certificate: the private key does not match the certificate";
  }
  if (EVP_PKEY_get_base_id(c->key) != EVP_PKEY_RSA) {
    const char *type = EVP_PKEY_get0_type_name(c->key);
    snprintf(err, errlen, "certificate: a key of type %s cannot sign RS256 or PS256 assertions (an RSA key is needed)",
             type ? type : "unknown");
    return err;
  }
  if (EVP_PKEY_get_bits(c->key) < 2048) {
    snprintf(err, errlen, "certificate: an RSA key of %d bits is too weak to sign (2048 at least)",
             EVP_PKEY_get_bits(c->key));
    return err;
  }
  time_t t = (time_t)now;
  if (X509_cmp_time(X509_get0_notAfter(c->cert), &t) < 0) return "certificate: the certificate has expired";
  if (X509_cmp_time(X509_get0_notBefore(c->cert), &t) > 0) return "certificate: the certificate is not valid yet";

  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!X509_digest(c->cert, EVP_sha1(), md, &n)) return "certificate: cannot compute the SHA-1 thumbprint";
  hex(md, n, c->kid);
  pc_base64(md, n, c->x5t, 1);
  if (!X509_digest(c->cert, EVP_sha256(), md, &n)) return "certificate: cannot compute the SHA-256 thumbprint";
  pc_base64(md, n, c->x5t_s256, 1);
  return NULL;
}

const char *pc_cert_load(pc_cert *c, const pc_cert_files *f, double now, char *err, size_t errlen) {
  ERR_clear_error();
  if (f->pfx) {
    BIO *b = open_file(f->pfx, "pfx", err, errlen);
    if (b == NULL) return err;
    PKCS12 *p12 = d2i_PKCS12_bio(b, NULL);
    BIO_free(b);
    if (p12 == NULL) {
      ERR_clear_error();
      return "certificate.pfx: not a PKCS#12 (.pfx) file";
    }
    STACK_OF(X509) *ca = NULL;
    int ok = PKCS12_parse(p12, f->password ? f->password : "", &c->key, &c->cert, &ca);
    PKCS12_free(p12);
    sk_X509_pop_free(ca, X509_free);
    if (!ok || c->key == NULL || c->cert == NULL) {
      int pw = bad_decrypt();
      pc_cert_free(c);
      if (pw) return f->password ? "certificate.password: wrong password for the .pfx file"
                                 : "certificate.pfx: the file is protected: give certificate.password";
      return "certificate.pfx: the file holds no private key and certificate";
    }
  } else {
    BIO *b = open_file(f->key, "key", err, errlen);
    if (b == NULL) return err;
    c->key = PEM_read_bio_PrivateKey(b, NULL, password_cb, (void *)f->password);
    BIO_free(b);
    if (c->key == NULL) {
      if (bad_decrypt())
        return f->password ? "certificate.password: wrong password for the private key"
                           : "certificate.key: the private key is encrypted: give certificate.password";
      return "certificate.key: not a PEM private key";
    }
    b = open_file(f->cert, "cert", err, errlen);
    if (b == NULL) {
      pc_cert_free(c);
      return err;
    }
    c->cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    if (c->cert == NULL) {
      ERR_clear_error();
      pc_cert_free(c);
      return "certificate.cert: not a PEM certificate";
    }
  }
  const char *why = check(c, now, err, errlen);
  if (why) pc_cert_free(c);
  return why;
}

/* JSON string contents, escaped. */
static void add_json_string(luaL_Buffer *b, const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      luaL_addchar(b, '\\');
      luaL_addchar(b, (char)ch);
    } else if (ch < 0x20) {
      char u[8];
      snprintf(u, sizeof u, "\\u%04x", ch);
      luaL_addstring(b, u);
    } else
      luaL_addchar(b, (char)ch);
  }
}

/* Replaces the string at the top by its base64url form. */
static void b64url_top(lua_State *L) {
  size_t n;
  const unsigned char *p = (const unsigned char *)lua_tolstring(L, -1, &n);
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n / 3 * 4 + 5);
  luaL_pushresultsize(&b, pc_base64(p, n, out, 1));
  lua_remove(L, -2);
}

/* Pushes the assertion's header, base64url-encoded. */
static void push_header(lua_State *L, const pc_cert *c) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "{\"alg\":\"");
  luaL_addstring(&b, c->alg_ps256 ? "PS256" : "RS256");
  luaL_addstring(&b, "\",\"typ\":\"JWT\",\"x5t\":\"");
  luaL_addstring(&b, c->x5t);
  luaL_addstring(&b, "\",\"kid\":\"");
  luaL_addstring(&b, c->kid);
  if (c->with_x5t_s256) {
    luaL_addstring(&b, "\",\"x5t#S256\":\"");
    luaL_addstring(&b, c->x5t_s256);
  }
  luaL_addstring(&b, "\"}");
  luaL_pushresult(&b);
  b64url_top(L);
}

/* Pushes the assertion's claims, base64url-encoded. */
static void push_claims(lua_State *L, const char *client_id, const char *aud, double now, const char *jti) {
  long long iat = (long long)now;
  char nums[96];
  snprintf(nums, sizeof nums, ",\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}", iat, iat, iat + PC_ASSERTION_LIFETIME);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "{\"aud\":\"");
  add_json_string(&b, aud);
  luaL_addstring(&b, "\",\"iss\":\"");
  add_json_string(&b, client_id);
  luaL_addstring(&b, "\",\"sub\":\"");
  add_json_string(&b, client_id);
  luaL_addstring(&b, "\",\"jti\":\"");
  add_json_string(&b, jti);
  luaL_addchar(&b, '"');
  luaL_addstring(&b, nums);
  luaL_pushresult(&b);
  b64url_top(L);
}

int pc_cert_assertion(lua_State *L, pc_cert *c, const char *client_id, const char *aud, double now, const char *jti) {
  push_header(L, c);
  push_claims(L, client_id, aud, now, jti);
  lua_pushliteral(L, ".");
  lua_rotate(L, -2, 1);
  lua_concat(L, 3); /* the signing input, pinned on the stack */

  size_t n;
  const char *input = lua_tolstring(L, -1, &n);
  unsigned char sig[1024]; /* an RSA signature is the modulus size: 8192-bit keys fit */
  size_t siglen = sizeof sig;
  int ok = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  EVP_PKEY_CTX *pctx = NULL;
  if (md && EVP_PKEY_get_size(c->key) <= (int)sizeof sig &&
      EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, c->key) == 1 &&
      (!c->alg_ps256 || (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1)) &&
      EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, n) == 1)
    ok = 1;
  EVP_MD_CTX_free(md);
  ERR_clear_error();
  if (!ok) {
    lua_pop(L, 1);
    return 0;
  }
  char out[1024 / 3 * 4 + 8];
  size_t outlen = pc_base64(sig, siglen, out, 1);
  lua_pushliteral(L, ".");
  lua_pushlstring(L, out, outlen);
  lua_concat(L, 3);
  return 1;
}
