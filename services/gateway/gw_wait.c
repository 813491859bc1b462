#include "gw_wait.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_dict.h"

struct gw_waiters_s {
    hr_dict_t *heads; /* channel → first gw_waiter_t (borrowed) */
};

gw_waiters_t *
gw_waiters_create(void)
{
    gw_waiters_t *w = hr_calloc(1, sizeof(*w));
    w->heads = hr_dict_create();
    return w;
}

void
gw_waiters_destroy(gw_waiters_t *w)
{
    if (w == NULL)
        return;
    hr_dict_destroy(w->heads, NULL);
    hr_free(w);
}

void
gw_waiters_add(gw_waiters_t *w, gw_waiter_t *x, const char *ch, size_t len)
{
    x->ch = hr_strndup(ch, len);
    x->len = len;
    x->prev = NULL;
    x->next = hr_dict_get(w->heads, ch, len);
    if (x->next != NULL)
        x->next->prev = x;
    hr_dict_set(w->heads, ch, len, x);
}

void
gw_waiters_remove(gw_waiters_t *w, gw_waiter_t *x)
{
    if (x->ch == NULL)
        return;
    if (x->prev != NULL)
        x->prev->next = x->next;
    else if (x->next != NULL)
        hr_dict_set(w->heads, x->ch, x->len, x->next);
    else
        hr_dict_del(w->heads, x->ch, x->len);
    if (x->next != NULL)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    hr_free(x->ch);
    x->ch = NULL;
}

typedef struct {
    gw_waiter_t **all;
    size_t n, cap;
} gw_waiters_walk_t;

static int
gw_waiters_collect(const char *key, size_t klen, void *val, void *ud)
{
    HR_UNUSED(key);
    HR_UNUSED(klen);
    gw_waiters_walk_t *wk = ud;
    for (gw_waiter_t *x = val; x != NULL; x = x->next) {
        if (wk->n == wk->cap) {
            wk->cap = wk->cap ? wk->cap * 2 : 16;
            wk->all = hr_realloc(wk->all, wk->cap * sizeof(*wk->all));
        }
        wk->all[wk->n++] = x;
    }
    return 0;
}

gw_waiter_t *
gw_waiters_first(gw_waiters_t *w, const char *ch, size_t len)
{
    return hr_dict_get(w->heads, ch, len);
}

gw_waiter_t **
gw_waiters_all(gw_waiters_t *w, size_t *n)
{
    gw_waiters_walk_t wk = {NULL, 0, 0};
    hr_dict_foreach(w->heads, gw_waiters_collect, &wk);
    *n = wk.n;
    return wk.all;
}
