/* A small shim over Intel ipsec-mb's direct AES-GCM API, for the `gcm` benchmark only.
 * ipsec-mb's GCM entry points are macros over function pointers in IMB_MGR, which Rust
 * cannot call directly; the key structure must be 64-byte aligned (DECLARE_ALIGNED in
 * ipsec-mb's own tests), so it is allocated with aligned_alloc here. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <intel-ipsec-mb.h>

struct shim {
        IMB_MGR *mgr;
        struct gcm_key_data *key; /* 64-byte aligned */
        int key_len;
        IMB_ARCH arch;
};

void *vpn_imb_new(const uint8_t *key, int key_len)
{
        struct shim *s = calloc(1, sizeof(*s));
        if (s == NULL)
                return NULL;
        s->mgr = alloc_mb_mgr(0);
        s->key = aligned_alloc(64, (sizeof(struct gcm_key_data) + 63) & ~(size_t)63);
        if (s->mgr == NULL || s->key == NULL || (key_len != 16 && key_len != 32)) {
                free(s->key);
                free_mb_mgr(s->mgr);
                free(s);
                return NULL;
        }
        init_mb_mgr_auto(s->mgr, &s->arch);
        s->key_len = key_len;
        if (key_len == 16)
                IMB_AES128_GCM_PRE(s->mgr, key, s->key);
        else
                IMB_AES256_GCM_PRE(s->mgr, key, s->key);
        return s;
}

/* 0 none, 1 no AES-NI, 2 SSE, 3 AVX, 4 AVX2, 5 AVX-512 */
int vpn_imb_arch(const void *p)
{
        return (int)((const struct shim *)p)->arch;
}

void vpn_imb_seal(void *p, const uint8_t *iv, const uint8_t *aad, uint64_t aad_len,
                  uint8_t *buf, uint64_t len, uint8_t *tag)
{
        struct shim *s = p;
        struct gcm_context_data ctx;
        if (s->key_len == 16)
                IMB_AES128_GCM_ENC(s->mgr, s->key, &ctx, buf, buf, len, iv, aad, aad_len, tag, 16);
        else
                IMB_AES256_GCM_ENC(s->mgr, s->key, &ctx, buf, buf, len, iv, aad, aad_len, tag, 16);
}

void vpn_imb_open(void *p, const uint8_t *iv, const uint8_t *aad, uint64_t aad_len,
                  uint8_t *buf, uint64_t len, uint8_t *tag)
{
        struct shim *s = p;
        struct gcm_context_data ctx;
        if (s->key_len == 16)
                IMB_AES128_GCM_DEC(s->mgr, s->key, &ctx, buf, buf, len, iv, aad, aad_len, tag, 16);
        else
                IMB_AES256_GCM_DEC(s->mgr, s->key, &ctx, buf, buf, len, iv, aad, aad_len, tag, 16);
}

void vpn_imb_free(void *p)
{
        struct shim *s = p;
        if (s == NULL)
                return;
        memset(s->key, 0, sizeof(*s->key));
        free(s->key);
        free_mb_mgr(s->mgr);
        free(s);
}
