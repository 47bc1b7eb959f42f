/*-------------------------------------------------------------------------
 *
 * apply.c
 *	  softadastra.apply_ops(peer text, epoch bigint, ops jsonb): apply a
 *	  batch of one peer's ops inside the caller's transaction, detecting
 *	  conflicts per column under row locks and writing each one to
 *	  softadastra.conflicts.
 *
 * ORDER AND IDEMPOTENCY
 *	  The (peer, epoch) row of softadastra.peer_progress is locked first
 *	  (FOR UPDATE), so two batches of one peer serialize.  Its applied_seq
 *	  W is the watermark: an op with seq <= W is a duplicate (nothing
 *	  changes); seq = W + 1 is applied and W becomes seq, in this
 *	  transaction, whatever the op's outcome (applied, conflict, rejected);
 *	  seq > W + 1 is a gap: status 'gap', and the batch stops there.
 *
 * LOCKING
 *	  A segment (below) first locks the rows of all its ops with one SELECT
 *	  ... ORDER BY key FOR UPDATE per table, so two apply_ops calls touching
 *	  the same rows in different orders queue instead of deadlocking.  A
 *	  deadlock or serialization failure against other sessions (plain SQL,
 *	  or two inserts of the same new keys) rolls the segment back; it runs
 *	  again after a random pause, at most SA_RETRIES times, then the call
 *	  fails with SQLSTATE 40P01 having applied nothing (the caller retries).
 *
 * SEGMENTS
 *	  Ops run inside a subtransaction, as many in a row as succeed: one
 *	  subtransaction per batch when nothing fails.  Within it the rows the
 *	  ops touch are kept in memory (refreshed from each write's RETURNING),
 *	  and row clocks are written once for the segment.  When op k raises an
 *	  error that is bad input (data exception, constraint violation,
 *	  undefined name, a trigger's RAISE ...), the segment is rolled back,
 *	  the ops before k run again in a new segment, op k is recorded in
 *	  softadastra.rejections, and the ops after k continue.  Any other error
 *	  (out of memory, cancel, internal) fails the whole call.
 *
 * CONFLICTS (per column; "local" is the row now, "remote" the op)
 *	  insert, row exists, some column differs ......... insert_exists
 *	  update, row missing ............................. update_missing
 *	  update, base[c] <> local[c] <> remote[c] ........ update_differ on c
 *	  delete, row missing ............................. delete_missing
 *	  delete, some base[c] <> local[c] ................ delete_differ
 *	  Columns an update changes without conflict are applied whatever the
 *	  strategy.  For the conflicting ones:
 *	    lww          the larger (hlc, origin) wins, column by column; the
 *	                 local clock comes from softadastra.row_clocks (for
 *	                 rows apply_ops wrote) or the commit timestamp of the
 *	                 row's xmin (plain SQL; needs track_commit_timestamp,
 *	                 without it the local write counts as made now)
 *	    server_wins  local stays (kept_local)
 *	    edge_wins    remote applied (applied_remote)
 *	    manual       local stays, resolution 'open'
 *
 * THE LOOP
 *	  Before an op's write, a transactional logical message with prefix
 *	  "softadastra" and content {"peer": P, "epoch": E, "from": F, "to": T}
 *	  tells the bridge's decoder where the changes that follow come from
 *	  (ops F..T); at the end, {..., "final": true} names every op the call
 *	  finished, those that wrote nothing too (see sa_emit_final).
 *
 * SAFETY
 *	  Table names ("schema.name", raw) are resolved through the catalog and
 *	  written back quoted; column names must be attributes of that table
 *	  and are quoted; values only travel as typed parameters, converted by
 *	  the column type's input function.  A peer's batch cannot touch a
 *	  table outside its allowed list or not synced.  The function runs with
 *	  search_path = pg_catalog, pg_temp (set in its SQL declaration).
 *	  Prepared plans are cached per statement text and parameter types.
 *
 *-------------------------------------------------------------------------
 */
#include "sa_compat.h"

#include "access/commit_ts.h"
#include "access/genam.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "sa_pgext.h"

PG_FUNCTION_INFO_V1(softadastra_apply_ops);

#define SA_RETRIES 10
#define SA_PLAN_CACHE_MAX 1024

typedef enum SaKind
{
	SA_INSERT,
	SA_UPDATE,
	SA_DELETE
} SaKind;

typedef enum SaStrategy
{
	SA_LWW,
	SA_SERVER_WINS,
	SA_EDGE_WINS,
	SA_MANUAL
} SaStrategy;

static const char *const sa_strategy_names[] = {"lww", "server_wins", "edge_wins", "manual"};

/* A column of a synced table (dropped ones have name NULL). */
typedef struct SaAtt
{
	char	   *name;
	Oid			typid;
	int32		typmod;
	Oid			typinput;
	Oid			typioparam;
	Oid			typoutput;
	Oid			arraytype;		/* its array type, if values can go through one */
} SaAtt;

/* What one batch knows of a table named by its ops. */
typedef struct SaTable
{
	char	   *given;			/* the "table" string of the ops */
	char	   *reject;			/* non-NULL: every op on it is rejected so */
	Oid			relid;
	char	   *qualname;		/* quoted schema.name */
	char		relkind;
	SaStrategy	strategy;
	int			natts;
	SaAtt	   *atts;			/* [natts], by attnum - 1 */
	int			npk;			/* 0: no primary key (REPLICA IDENTITY FULL) */
	AttrNumber *pk;
	TupleDesc	rowdesc;		/* layout of rows read and returned (sa_row_list) */
	struct SaTable *next;
} SaTable;

/* One column value of an op, as sent and as converted. */
typedef struct SaVal
{
	char	   *name;
	AttrNumber	attnum;
	JsonbValue	json;
	bool		isnull;
	char	   *text;			/* canonical text form (output of input) */
	Datum		datum;
} SaVal;

typedef struct SaOp
{
	JsonbValue	elem;			/* the op as sent, for rejections */
	char	   *reject;			/* non-NULL: refused when parsed, why */
	bool		has_seq;
	int64		seq;
	int64		hlc;
	SaKind		kind;
	char	   *origin;
	SaTable    *t;
	int			nkey,
				ncols,
				nbase;
	SaVal	   *key,
			   *cols,
			   *base;
	char	   *keytext;		/* canonical key {"col": "text"}, attnum order */
	Jsonb	   *keyjson;		/* the same as jsonb, made when needed */
	bool		prepared;		/* sa_prepare_op ran in this segment ... */
	char	   *prep_msg;		/* ... and refused it so, or NULL */
} SaOp;

/* One result row. */
typedef struct SaRes
{
	bool		has_seq;
	int64		seq;
	const char *status;
	int64		conflict_id;	/* 0: none */
	char	   *message;
} SaRes;

/* The current row of an op, locked. */
typedef struct SaRow
{
	bool		found;
	ItemPointerData ctid;
	Oid			tableoid;
	TransactionId xmin;
	HeapTuple	tup;
	TupleDesc	desc;			/* columns 4.. are the table's, attnum + 3 */
} SaRow;

/* A column's writer clock. */
typedef struct SaClock
{
	int64		hlc;
	const char *origin;
} SaClock;

typedef struct SaCall
{
	const char *peer;
	int64		epoch;
	bool		all_tables;
	Oid		   *allowed;
	int			nallowed;
	int64		watermark;
	SaTable    *tables;
	MemoryContext cxt;			/* lives for the call */
	SaRes	   *res;
	int			nres,
				capres;
	int			gap;			/* a gap result was produced */
	/* the current segment */
	MemoryContext segcxt;
	HTAB	   *rows;			/* SaRowEnt: the rows its ops touch */
	struct SaRowNode **pend;	/* nodes whose row_clocks entry changed */
	int			npend,
				cappend;
	struct SaWrite *wq;			/* queued writes */
	int			nwq,
				capwq;
	bool		in_flush;		/* writing the queue: an error is no one op's */
	bool		in_clock_flush;	/* writing row clocks */
	bool		no_batch;		/* write each op at once (to find a bad one) */
	char	   *last_retry;		/* why the last segment had to run again */
} SaCall;

/* ------------------------------------------------------------------------
 * Plans: prepared once per statement text and parameter types, kept for
 * the life of the backend (SPI_keepplan).  A table's plans never go stale
 * in a harmful way: the key includes the parameter types, and the plan
 * cache re-plans after DDL.  Past SA_PLAN_CACHE_MAX the cache is emptied.
 * ---------------------------------------------------------------------- */

typedef struct SaPlanEnt
{
	uint64		hash;			/* hash key */
	struct SaPlanNode *chain;
} SaPlanEnt;

typedef struct SaPlanNode
{
	char	   *sql;
	int			nargs;
	Oid		   *argtypes;
	SPIPlanPtr	plan;
	struct SaPlanNode *next;
} SaPlanNode;

static HTAB *sa_plans = NULL;
static long sa_nplans = 0;

static void
sa_plans_reset(void)
{
	HASH_SEQ_STATUS st;
	SaPlanEnt  *e;

	if (sa_plans == NULL)
		return;
	hash_seq_init(&st, sa_plans);
	while ((e = hash_seq_search(&st)) != NULL)
	{
		for (SaPlanNode *n = e->chain; n != NULL;)
		{
			SaPlanNode *next = n->next;

			SPI_freeplan(n->plan);
			pfree(n->sql);
			pfree(n->argtypes);
			pfree(n);
			n = next;
		}
	}
	hash_destroy(sa_plans);
	sa_plans = NULL;
	sa_nplans = 0;
}

static SPIPlanPtr
sa_plan(const char *sql, int nargs, const Oid *argtypes)
{
	uint64		h;
	bool		found;
	SaPlanEnt  *e;
	SaPlanNode *n;
	SPIPlanPtr	p;
	MemoryContext old;

	if (sa_nplans >= SA_PLAN_CACHE_MAX)
		sa_plans_reset();
	h = hash_bytes_extended((const unsigned char *) sql, strlen(sql), 0);
	h = hash_combine64(h, hash_bytes_extended((const unsigned char *) argtypes,
											  sizeof(Oid) * nargs, nargs));
	if (sa_plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(SaPlanEnt);
		ctl.hcxt = TopMemoryContext;
		sa_plans = hash_create("softadastra plans", 256, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(sa_plans, &h, HASH_FIND, &found);
	if (found)
		for (n = e->chain; n != NULL; n = n->next)
			if (n->nargs == nargs && strcmp(n->sql, sql) == 0 &&
				memcmp(n->argtypes, argtypes, sizeof(Oid) * nargs) == 0)
				return n->plan;

	p = SPI_prepare(sql, nargs, (Oid *) argtypes);
	if (p == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(p) != 0)
		elog(ERROR, "SPI_keepplan failed");
	e = hash_search(sa_plans, &h, HASH_ENTER, &found);
	if (!found)
		e->chain = NULL;
	old = MemoryContextSwitchTo(TopMemoryContext);
	n = palloc(sizeof *n);
	n->sql = pstrdup(sql);
	n->nargs = nargs;
	n->argtypes = palloc(sizeof(Oid) * (nargs > 0 ? nargs : 1));
	memcpy(n->argtypes, argtypes, sizeof(Oid) * nargs);
	n->plan = p;
	n->next = e->chain;
	e->chain = n;
	MemoryContextSwitchTo(old);
	sa_nplans++;
	return p;
}

static uint64
sa_exec_plan(SPIPlanPtr p, const char *sql, Datum *values, const char *nulls,
			 bool read_only, int expect)
{
	int			rc = SPI_execute_plan(p, values, nulls, read_only, 0);

	if (rc != expect)
		elog(ERROR, "\"%s\" returned %s", sql, SPI_result_code_string(rc));
	return SPI_processed;
}

/* Run a cached plan; returns SPI_processed, ERROR on an unexpected code. */
static uint64
sa_exec(const char *sql, int nargs, const Oid *argtypes, Datum *values,
		const char *nulls, bool read_only, int expect)
{
	return sa_exec_plan(sa_plan(sql, nargs, argtypes), sql, values, nulls, read_only, expect);
}


/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

static void
sa_add_res(SaCall *c, bool has_seq, int64 seq, const char *status,
		   int64 conflict_id, const char *message)
{
	MemoryContext old = MemoryContextSwitchTo(c->cxt);

	if (c->nres == c->capres)
	{
		c->capres = c->capres == 0 ? 64 : c->capres * 2;
		c->res = c->res == NULL ? palloc(sizeof(SaRes) * c->capres)
			: repalloc(c->res, sizeof(SaRes) * c->capres);
	}
	c->res[c->nres].has_seq = has_seq;
	c->res[c->nres].seq = seq;
	c->res[c->nres].status = status;
	c->res[c->nres].conflict_id = conflict_id;
	c->res[c->nres].message = message != NULL ? pstrdup(message) : NULL;
	c->nres++;
	MemoryContextSwitchTo(old);
}

/* A JSON integer in [min, max] into *out. */
static bool
sa_json_int64(const JsonbValue *v, int64 min, int64 *out)
{
	char	   *s,
			   *end;
	long long	x;

	if (v == NULL || v->type != jbvNumeric)
		return false;
	s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s || x < min)
		return false;
	*out = (int64) x;
	return true;
}

static JsonbValue *
sa_member(JsonbContainer *obj, const char *name)
{
	return getKeyJsonValueFromContainer(obj, name, strlen(name), NULL);
}

/* A string member into a fresh C string, or NULL when absent / not a string. */
static char *
sa_member_str(JsonbContainer *obj, const char *name)
{
	JsonbValue *v = sa_member(obj, name);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

static int64
sa_now_hlc(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		ms = now / 1000 + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

	return (ms << 16) | 0xFFFF;
}

static bool
sa_clock_gt(SaClock a, SaClock b)
{
	if (a.hlc != b.hlc)
		return a.hlc > b.hlc;
	return strcmp(a.origin, b.origin) > 0;
}

/* JSON text of a value for the conflict ledger: its text, or marked omitted. */
static void
sa_ledger_value(StringInfo buf, const char *text, bool isnull)
{
	if (isnull)
		appendStringInfoString(buf, "null");
	else if ((int64) strlen(text) > (int64) sa_conflict_value_max)
		appendStringInfo(buf, "{\"omitted\": true, \"length\": %zu}", strlen(text));
	else
		escape_json(buf, text);
}

static Datum
sa_jsonb_from_text(const char *s)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(s));
}

static Datum
sa_text_array(char **items, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * (n > 0 ? n : 1));

	for (int i = 0; i < n; i++)
		d[i] = CStringGetTextDatum(items[i]);
	return PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* A one-dimensional array of n values of elemtype (nulls may be NULL). */
static Datum
sa_array(Datum *d, bool *nulls, int n, Oid elemtype)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int16		len;
	bool		byval;
	char		align;

	get_typlenbyvalalign(elemtype, &len, &byval, &align);
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, elemtype, len, byval, align));
}

/* ------------------------------------------------------------------------
 * Tables
 * ---------------------------------------------------------------------- */

static SaTable *
sa_table_reject(SaCall *c, SaTable *t, const char *fmt, const char *arg)
{
	MemoryContext old = MemoryContextSwitchTo(c->cxt);

	t->reject = psprintf(fmt, arg);
	MemoryContextSwitchTo(old);
	return t;
}

/*
 * The table an op names, resolved once per batch.  A name that is not a
 * synced table this peer may write yields an SaTable with reject set.
 */
static SaTable *
sa_table(SaCall *c, const char *given)
{
	SaTable    *t;
	const char *dot;
	Oid			nspid;
	Oid			relid;
	Relation	rel;
	TupleDesc	desc;
	Oid			pkoid;
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];
	MemoryContext old;
	bool		allowed;

	for (t = c->tables; t != NULL; t = t->next)
		if (strcmp(t->given, given) == 0)
			return t;

	old = MemoryContextSwitchTo(c->cxt);
	t = palloc0(sizeof *t);
	t->given = pstrdup(given);
	t->next = c->tables;
	c->tables = t;
	MemoryContextSwitchTo(old);

	/*
	 * "schema.name" as the bridge spells tables in ops: the raw names,
	 * split at the first dot (no quoting, no case folding), so a table
	 * round-trips between the down path and apply_ops.
	 */
	dot = strchr(given, '.');
	if (dot == NULL || dot == given || dot[1] == '\0')
		return sa_table_reject(c, t, "table name \"%s\" is not schema.name", given);
	nspid = get_namespace_oid(pnstrdup(given, dot - given), true);
	relid = OidIsValid(nspid) ? get_relname_relid(dot + 1, nspid) : InvalidOid;
	if (!OidIsValid(relid))
		return sa_table_reject(c, t, "table \"%s\" does not exist", given);

	args[0] = ObjectIdGetDatum(relid);
	if (sa_exec("SELECT strategy FROM softadastra.tables WHERE relid = $1",
				1, argtypes, args, NULL, true, SPI_OK_SELECT) != 1)
		return sa_table_reject(c, t, "table \"%s\" is not synced (softadastra.add_table)", given);
	{
		char	   *s = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		for (int i = 0; i < (int) lengthof(sa_strategy_names); i++)
			if (strcmp(s, sa_strategy_names[i]) == 0)
				t->strategy = (SaStrategy) i;
		SPI_freetuptable(SPI_tuptable);
	}
	allowed = c->all_tables;
	for (int i = 0; i < c->nallowed && !allowed; i++)
		allowed = c->allowed[i] == relid;
	if (!allowed)
		return sa_table_reject(c, t, "peer may not write table \"%s\"", given);

	rel = relation_open(relid, RowExclusiveLock);
	old = MemoryContextSwitchTo(c->cxt);
	t->relid = relid;
	t->qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
											 RelationGetRelationName(rel));
	t->relkind = rel->rd_rel->relkind;
	desc = RelationGetDescr(rel);
	t->natts = desc->natts;
	t->atts = palloc0(sizeof(SaAtt) * (desc->natts > 0 ? desc->natts : 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);
		bool		varlena;

		if (a->attisdropped)
			continue;
		t->atts[i].name = pstrdup(NameStr(a->attname));
		t->atts[i].typid = a->atttypid;
		t->atts[i].typmod = a->atttypmod;
		getTypeInputInfo(a->atttypid, &t->atts[i].typinput, &t->atts[i].typioparam);
		getTypeOutputInfo(a->atttypid, &t->atts[i].typoutput, &varlena);
		t->atts[i].arraytype = type_is_array(a->atttypid) ? InvalidOid : get_array_type(a->atttypid);
	}
	list_free(RelationGetIndexList(rel));	/* fills rd_pkindex */
	pkoid = rel->rd_pkindex;
	if (OidIsValid(pkoid))
	{
		Relation	idx = index_open(pkoid, AccessShareLock);
		int			n = idx->rd_index->indnkeyatts;

		t->npk = n;
		t->pk = palloc(sizeof(AttrNumber) * n);
		for (int i = 0; i < n; i++)
			t->pk[i] = idx->rd_index->indkey.values[i];
		index_close(idx, AccessShareLock);
	}
	MemoryContextSwitchTo(old);
	relation_close(rel, NoLock);	/* keep the lock to the end of the transaction */
	return t;
}

static AttrNumber
sa_attnum(const SaTable *t, const char *name)
{
	for (int i = 0; i < t->natts; i++)
		if (t->atts[i].name != NULL && strcmp(t->atts[i].name, name) == 0)
			return (AttrNumber) (i + 1);
	return InvalidAttrNumber;
}

/* ------------------------------------------------------------------------
 * Parsing an op
 * ---------------------------------------------------------------------- */

/*
 * The members of object member "sec" ("key", "cols", "base") into vals.
 * Returns NULL, or a rejection message.
 */
static char *
sa_parse_section(JsonbContainer *op, const char *sec, SaVal **vals, int *n, bool required)
{
	JsonbValue *v = sa_member(op, sec);
	JsonbIterator *it;
	JsonbValue	k,
				val;
	JsonbIteratorToken tok;
	int			cap = 8;

	*vals = NULL;
	*n = 0;
	if (v == NULL || v->type == jbvNull)
		return required ? psprintf("member \"%s\" is missing", sec) : NULL;
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		return psprintf("member \"%s\" must be an object", sec);
	*vals = palloc0(sizeof(SaVal) * cap);
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, false)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &val, true);
		if (*n == cap)
		{
			cap *= 2;
			*vals = repalloc(*vals, sizeof(SaVal) * cap);
		}
		memset(&(*vals)[*n], 0, sizeof(SaVal));
		(*vals)[*n].name = pnstrdup(k.val.string.val, k.val.string.len);
		(*vals)[*n].json = val;
		(*n)++;
	}
	return NULL;
}

/* Is column name listed in raw[sec] (json columns sent as text)? */
static bool
sa_is_raw(JsonbContainer *op, const char *sec, const char *name)
{
	JsonbValue *raw = sa_member(op, "raw");
	JsonbValue *list;
	JsonbValue	want;

	if (raw == NULL || raw->type != jbvBinary || !JsonContainerIsObject(raw->val.binary.data))
		return false;
	list = sa_member(raw->val.binary.data, sec);
	if (list == NULL || list->type != jbvBinary || !JsonContainerIsArray(list->val.binary.data))
		return false;
	want.type = jbvString;
	want.val.string.val = (char *) name;
	want.val.string.len = strlen(name);
	return findJsonbValueFromContainer(list->val.binary.data, JB_FARRAY, &want) != NULL;
}

/*
 * Convert the values of one section to their columns' types.  Returns a
 * rejection message, or NULL; a value the type's input function refuses
 * raises an ERROR (a rejection, through the segment).
 */
static char *
sa_convert(SaTable *t, JsonbContainer *op, const char *sec, SaVal *vals, int n)
{
	for (int i = 0; i < n; i++)
	{
		SaVal	   *v = &vals[i];
		SaAtt	   *a;
		char	   *text;
		bool		is_json;

		v->attnum = sa_attnum(t, v->name);
		if (v->attnum == InvalidAttrNumber)
			return psprintf("column \"%s\" of table %s does not exist", v->name, t->qualname);
		for (int j = 0; j < i; j++)
			if (vals[j].attnum == v->attnum)
				return psprintf("column \"%s\" appears twice in \"%s\"", v->name, sec);
		a = &t->atts[v->attnum - 1];
		is_json = a->typid == JSONOID || a->typid == JSONBOID;
		switch (v->json.type)
		{
			case jbvNull:
				v->isnull = true;
				v->datum = (Datum) 0;
				v->text = NULL;
				continue;
			case jbvBool:
				text = v->json.val.boolean ? "true" : "false";
				break;
			case jbvNumeric:
				text = DatumGetCString(DirectFunctionCall1(numeric_out,
														   NumericGetDatum(v->json.val.numeric)));
				break;
			case jbvString:
				text = pnstrdup(v->json.val.string.val, v->json.val.string.len);
				if (is_json && !sa_is_raw(op, sec, v->name))
				{
					StringInfoData b;

					initStringInfo(&b);
					escape_json(&b, text);
					text = b.data;
				}
				break;
			case jbvBinary:
				if (!is_json)
					return psprintf("value of column \"%s\" must be a string, number, boolean or null",
									v->name);
				text = JsonbToCString(NULL, v->json.val.binary.data, -1);
				break;
			default:
				return psprintf("value of column \"%s\" has an unsupported JSON type", v->name);
		}
		v->datum = OidInputFunctionCall(a->typinput, text, a->typioparam, a->typmod);
		v->text = OidOutputFunctionCall(a->typoutput, v->datum);
		v->isnull = false;
	}
	return NULL;
}

static SaVal *
sa_find(SaVal *vals, int n, AttrNumber attnum)
{
	for (int i = 0; i < n; i++)
		if (vals[i].attnum == attnum)
			return &vals[i];
	return NULL;
}

/*
 * Parse op (an element of the batch).  Returns NULL, or a rejection message
 * (op->has_seq says whether its seq is known).  Table and value errors
 * come later, from sa_prepare_op.
 */
static char *
sa_parse_op(SaCall *c, SaOp *op)
{
	JsonbContainer *o;
	JsonbValue *v;
	char	   *kind;
	int64		epoch;

	if (op->elem.type != jbvBinary || !JsonContainerIsObject(op->elem.val.binary.data))
		return "an op must be a JSON object";
	o = op->elem.val.binary.data;
	op->has_seq = sa_json_int64(sa_member(o, "seq"), 1, &op->seq);
	if (!op->has_seq)
		return "member \"seq\" must be an integer >= 1";
	op->origin = sa_member_str(o, "origin");
	if (op->origin == NULL)
		return "member \"origin\" must be a string";
	if (strcmp(op->origin, c->peer) != 0)
		return psprintf("origin \"%s\" is not the peer \"%s\"", op->origin, c->peer);
	v = sa_member(o, "epoch");
	if (v != NULL && !(sa_json_int64(v, 0, &epoch) && epoch == c->epoch))
		return psprintf("member \"epoch\" must be the batch's epoch " INT64_FORMAT, c->epoch);
	if (!sa_json_int64(sa_member(o, "hlc"), 0, &op->hlc))
		return "member \"hlc\" must be an integer >= 0";
	kind = sa_member_str(o, "kind");
	if (kind == NULL)
		return "member \"kind\" must be a string";
	if (strcmp(kind, "insert") == 0)
		op->kind = SA_INSERT;
	else if (strcmp(kind, "update") == 0)
		op->kind = SA_UPDATE;
	else if (strcmp(kind, "delete") == 0)
		op->kind = SA_DELETE;
	else if (strcmp(kind, "truncate") == 0)
		return "an edge cannot truncate a table";
	else
		return psprintf("unknown kind \"%s\" (insert, update, delete)", kind);
	return NULL;
}

static char *sa_key_text(const SaTable *t, int n, const AttrNumber *attnums, char *const *texts);

/* Resolve the op's table and convert its values (may ERROR: a rejection). */
static char *
sa_prepare_op(SaCall *c, SaOp *op)
{
	JsonbContainer *o = op->elem.val.binary.data;
	char	   *table = sa_member_str(o, "table");
	char	   *msg;
	if (table == NULL)
		return "member \"table\" must be a string";
	op->t = sa_table(c, table);
	if (op->t->reject != NULL)
		return op->t->reject;
	if ((msg = sa_parse_section(o, "key", &op->key, &op->nkey, true)) != NULL ||
		(msg = sa_parse_section(o, "cols", &op->cols, &op->ncols, op->kind != SA_DELETE)) != NULL ||
		(msg = sa_parse_section(o, "base", &op->base, &op->nbase, false)) != NULL)
		return msg;
	if (op->nkey == 0)
		return "member \"key\" names no column";
	if ((msg = sa_convert(op->t, o, "key", op->key, op->nkey)) != NULL ||
		(msg = sa_convert(op->t, o, "cols", op->cols, op->ncols)) != NULL ||
		(msg = sa_convert(op->t, o, "base", op->base, op->nbase)) != NULL)
		return msg;
	if (op->t->npk > 0)
	{
		bool		same = op->nkey == op->t->npk;

		for (int i = 0; i < op->t->npk && same; i++)
			same = sa_find(op->key, op->nkey, op->t->pk[i]) != NULL;
		if (!same)
		{
			StringInfoData b;

			initStringInfo(&b);
			for (int i = 0; i < op->t->npk; i++)
				appendStringInfo(&b, "%s%s", i > 0 ? ", " : "",
								 quote_identifier(op->t->atts[op->t->pk[i] - 1].name));
			return psprintf("member \"key\" must name exactly the primary key of %s: %s",
							op->t->qualname, b.data);
		}
	}
	for (int i = 0; i < op->nkey; i++)
		if (op->key[i].isnull)
			return psprintf("key column \"%s\" is null", op->key[i].name);
	/* canonical key, for the segment's row map, row_clocks and the ledger */
	{
		AttrNumber *atts = palloc(sizeof(AttrNumber) * op->nkey);
		char	  **texts = palloc(sizeof(char *) * op->nkey);

		for (int i = 0; i < op->nkey; i++)
		{
			atts[i] = op->key[i].attnum;
			texts[i] = op->key[i].text;
		}
		op->keytext = sa_key_text(op->t, op->nkey, atts, texts);
	}
	op->keyjson = NULL;
	return NULL;
}

/* The op's key as jsonb (for the ledger). */
static Jsonb *
sa_keyjson(SaOp *op)
{
	if (op->keyjson == NULL)
		op->keyjson = DatumGetJsonbP(sa_jsonb_from_text(op->keytext));
	return op->keyjson;
}

/* ------------------------------------------------------------------------
 * Rows
 *
 * Within a segment every row an op touches is kept in a map keyed by (table,
 * canonical key text).  For tables with a primary key, the rows of all the
 * segment's ops are locked up front by one SELECT ... ORDER BY key FOR UPDATE
 * per table, so two apply_ops calls lock the rows they share in the same
 * order and queue instead of deadlocking; keys with no row are entered as
 * missing.  Each write returns the new row version (RETURNING), which
 * replaces the map's, so later ops of the batch see earlier ops' effects.  A
 * key that is missing from the map (no primary key), or that someone else
 * inserted since, is looked up by a SELECT ... FOR UPDATE of its own.
 * ---------------------------------------------------------------------- */

typedef struct SaRowNode
{
	Oid			relid;
	char	   *key;			/* canonical key text */
	SaRow		row;
	bool		write_pending;	/* a queued write (row is not its result yet) */
	/* its row_clocks entry, as the segment has it (lww tables) */
	bool		clk_loaded;		/* read (the fields below are meaningful) */
	bool		clk_found;		/* an entry exists */
	bool		clk_in_db;		/* ... in the table, at clk_ctid */
	bool		clk_tomb;		/* it says apply_ops deleted the row */
	bool		clock_pending;	/* changed since read or written */
	ItemPointerData clk_ctid;
	TransactionId clk_xmin;		/* the row version it describes */
	Jsonb	   *clk_clocks;
	SaClock		clk_base;
	struct SaRowNode *next;
} SaRowNode;

typedef struct SaRowEnt
{
	uint64		hash;			/* hash key */
	SaRowNode  *chain;
} SaRowEnt;

static uint64
sa_row_hash(Oid relid, const char *key)
{
	return hash_combine64(relid, hash_bytes_extended((const unsigned char *) key, strlen(key), 7));
}

static SaRowNode *
sa_row_find(SaCall *c, Oid relid, const char *key, bool create)
{
	uint64		h = sa_row_hash(relid, key);
	bool		found;
	SaRowEnt   *e = hash_search(c->rows, &h, create ? HASH_ENTER : HASH_FIND, &found);
	SaRowNode  *n;

	if (e == NULL)
		return NULL;
	if (!found)
		e->chain = NULL;
	for (n = e->chain; n != NULL; n = n->next)
		if (n->relid == relid && strcmp(n->key, key) == 0)
			return n;
	if (!create)
		return NULL;
	n = MemoryContextAllocZero(c->segcxt, sizeof *n);
	n->relid = relid;
	n->key = MemoryContextStrdup(c->segcxt, key);
	n->next = e->chain;
	e->chain = n;
	return n;
}

/* The select list every row read and write returns: ctid, tableoid, xmin,
 * then the table's columns by attnum (NULL for a dropped one). */
static void
sa_row_list(StringInfo q, const SaTable *t, const char *alias)
{
	appendStringInfo(q, "%sctid, %stableoid, %sxmin", alias, alias, alias);
	for (int i = 0; i < t->natts; i++)
		if (t->atts[i].name != NULL)
			appendStringInfo(q, ", %s%s", alias, quote_identifier(t->atts[i].name));
		else
			appendStringInfoString(q, ", NULL::pg_catalog.text");
}

/* Copy row i of the current SPI result into row (segment memory). */
static void
sa_row_take(SaCall *c, SaTable *t, uint64 i, SaRow *row)
{
	TupleDesc	d = SPI_tuptable->tupdesc;
	HeapTuple	tup = SPI_tuptable->vals[i];
	bool		isnull;
	MemoryContext old;

	if (t->rowdesc == NULL)
	{
		old = MemoryContextSwitchTo(c->cxt);
		t->rowdesc = CreateTupleDescCopy(d);
		MemoryContextSwitchTo(old);
	}
	else if (t->rowdesc->natts != d->natts)
		elog(ERROR, "row layout of %s changed during apply_ops", t->qualname);
	old = MemoryContextSwitchTo(c->segcxt);
	row->found = true;
	row->tup = heap_copytuple(tup);
	row->desc = t->rowdesc;
	MemoryContextSwitchTo(old);
	row->ctid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tup, d, 1, &isnull));
	row->tableoid = DatumGetObjectId(SPI_getbinval(tup, d, 2, &isnull));
	row->xmin = DatumGetTransactionId(SPI_getbinval(tup, d, 3, &isnull));
}

/* The current text of column attnum (NULL for SQL NULL). */
static char *
sa_local_text(const SaRow *row, AttrNumber attnum)
{
	return SPI_getvalue(row->tup, row->desc, attnum + 3);
}

/*
 * Canonical key text: {"col": "text", ...} over the given columns in
 * attnum order, texts as the columns' output functions write them.
 */
static char *
sa_key_text(const SaTable *t, int n, const AttrNumber *attnums, char *const *texts)
{
	StringInfoData b;
	bool		first = true;

	initStringInfo(&b);
	appendStringInfoChar(&b, '{');
	for (int a = 1; a <= t->natts; a++)
		for (int i = 0; i < n; i++)
			if (attnums[i] == a)
			{
				if (!first)
					appendStringInfoString(&b, ", ");
				first = false;
				escape_json(&b, t->atts[a - 1].name);
				appendStringInfoString(&b, ": ");
				escape_json(&b, texts[i]);
			}
	appendStringInfoChar(&b, '}');
	return b.data;
}

/* The key text of a row of t (a table with a primary key). */
static char *
sa_row_key(const SaTable *t, const SaRow *row)
{
	char	  **texts = palloc(sizeof(char *) * t->npk);

	for (int i = 0; i < t->npk; i++)
	{
		texts[i] = sa_local_text(row, t->pk[i]);
		if (texts[i] == NULL)
			texts[i] = "";
	}
	return sa_key_text(t, t->npk, t->pk, texts);
}

/* SELECT ... FOR UPDATE the op's row by its key, into node. */
static void
sa_lock_row(SaCall *c, SaOp *op, SaRowNode *node)
{
	SaTable    *t = op->t;
	StringInfoData q;
	Oid		   *types = palloc(sizeof(Oid) * op->nkey);
	Datum	   *vals = palloc(sizeof(Datum) * op->nkey);

	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT ");
	sa_row_list(&q, t, "");
	appendStringInfo(&q, " FROM %s WHERE ", t->qualname);
	for (int i = 0; i < op->nkey; i++)
	{
		SaAtt	   *a = &t->atts[op->key[i].attnum - 1];

		appendStringInfo(&q, "%s%s = $%d", i > 0 ? " AND " : "", quote_identifier(a->name), i + 1);
		types[i] = a->typid;
		vals[i] = op->key[i].datum;
	}
	appendStringInfoString(&q, " LIMIT 1 FOR UPDATE");
	sa_exec(q.data, op->nkey, types, vals, NULL, false, SPI_OK_SELECT);
	memset(&node->row, 0, sizeof node->row);
	if (SPI_processed > 0)
		sa_row_take(c, t, 0, &node->row);
	SPI_freetuptable(SPI_tuptable);
}

/* The op's row: from the map, else locked now. */
static SaRowNode *
sa_row_get(SaCall *c, SaOp *op)
{
	SaRowNode  *n = sa_row_find(c, op->t->relid, op->keytext, false);

	if (n == NULL)
	{
		n = sa_row_find(c, op->t->relid, op->keytext, true);
		sa_lock_row(c, op, n);
	}
	return n;
}

static void sa_clk_load(SaCall *c, Oid relid, SaRowNode **nodes, int n);

static int
sa_cmp_keytext(const void *a, const void *b)
{
	return strcmp((*(SaOp *const *) a)->keytext, (*(SaOp *const *) b)->keytext);
}

/*
 * Lock the rows of every prepared op of [from, to) on a table with a
 * primary key, and enter them (and the missing keys) in the map.  One
 * statement per table: the keys go in as arrays sorted by their canonical
 * text, and each is looked up and locked in that order (a nested loop the
 * planner cannot reorder: LATERAL ... OFFSET 0), so every apply_ops call
 * takes its row locks in one global order.
 */
static void
sa_prelock(SaCall *c, SaOp *ops, int from, int to)
{
	for (SaTable *t = c->tables; t != NULL; t = t->next)
	{
		int			n = 0,
					m = 0;
		SaOp	  **sorted;
		Oid		   *argtypes;
		Datum	   *args;
		StringInfoData q;
		bool		arrays_ok = true;

		if (t->reject != NULL || t->npk == 0)
			continue;
		for (int i = from; i < to; i++)
			if (ops[i].prepared && ops[i].prep_msg == NULL && ops[i].t == t)
				n++;
		if (n == 0)
			continue;
		sorted = palloc(sizeof(SaOp *) * n);
		for (int i = from; i < to; i++)
			if (ops[i].prepared && ops[i].prep_msg == NULL && ops[i].t == t)
				sorted[m++] = &ops[i];
		qsort(sorted, n, sizeof(SaOp *), sa_cmp_keytext);
		m = 0;					/* distinct keys */
		for (int i = 0; i < n; i++)
			if (m == 0 || strcmp(sorted[m - 1]->keytext, sorted[i]->keytext) != 0)
				sorted[m++] = sorted[i];
		argtypes = palloc(sizeof(Oid) * t->npk);
		args = palloc(sizeof(Datum) * t->npk);
		for (int k = 0; k < t->npk && arrays_ok; k++)
		{
			SaAtt	   *a = &t->atts[t->pk[k] - 1];
			Datum	   *d = palloc(sizeof(Datum) * m);

			argtypes[k] = a->arraytype == InvalidOid ? InvalidOid : a->arraytype;
			arrays_ok = OidIsValid(argtypes[k]);
			if (!arrays_ok)
				break;
			for (int i = 0; i < m; i++)
				d[i] = sa_find(sorted[i]->key, sorted[i]->nkey, t->pk[k])->datum;
			args[k] = sa_array(d, NULL, m, a->typid);
		}
		if (!arrays_ok)
			continue;			/* ops lock their rows one by one */
		initStringInfo(&q);
		appendStringInfoString(&q, "SELECT r.* FROM ROWS FROM (");
		for (int k = 0; k < t->npk; k++)
			appendStringInfo(&q, "%spg_catalog.unnest($%d)", k > 0 ? ", " : "", k + 1);
		appendStringInfoString(&q, ") AS k(");
		for (int k = 0; k < t->npk; k++)
			appendStringInfo(&q, "%sk%d", k > 0 ? ", " : "", k + 1);
		appendStringInfoString(&q, ") CROSS JOIN LATERAL (SELECT ");
		sa_row_list(&q, t, "t.");
		appendStringInfo(&q, " FROM %s AS t WHERE ", t->qualname);
		for (int k = 0; k < t->npk; k++)
			appendStringInfo(&q, "%st.%s = k.k%d", k > 0 ? " AND " : "",
							 quote_identifier(t->atts[t->pk[k] - 1].name), k + 1);
		appendStringInfoString(&q, " OFFSET 0 FOR UPDATE OF t) AS r");
		sa_exec(q.data, t->npk, argtypes, args, NULL, false, SPI_OK_SELECT);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			SaRow		row;
			SaRowNode  *node;

			memset(&row, 0, sizeof row);
			sa_row_take(c, t, r, &row);
			node = sa_row_find(c, t->relid, sa_row_key(t, &row), true);
			node->row = row;
		}
		SPI_freetuptable(SPI_tuptable);
		{
			SaRowNode **nodes = palloc(sizeof(SaRowNode *) * m);

			for (int i = 0; i < m; i++)
				nodes[i] = sa_row_find(c, t->relid, sorted[i]->keytext, true);	/* missing: found = false */
			if (t->strategy == SA_LWW)
				sa_clk_load(c, t->relid, nodes, m);	/* their clocks, at once */
		}
	}
}

static bool
sa_text_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

/* After a write returned the new version (SPI result row 0): into node, or
 * under its new key when the write changed the key.  Returns the node that
 * holds the row now. */
static SaRowNode *
sa_row_written(SaCall *c, SaOp *op, SaRowNode *node)
{
	SaRow		row;

	memset(&row, 0, sizeof row);
	sa_row_take(c, op->t, 0, &row);
	SPI_freetuptable(SPI_tuptable);
	if (op->t->npk > 0)
	{
		char	   *k = sa_row_key(op->t, &row);

		if (strcmp(k, node->key) != 0)
		{
			node->row.found = false;	/* the old key has no row now */
			node = sa_row_find(c, op->t->relid, k, true);
		}
	}
	node->row = row;
	return node;
}

/* INSERT the op's key and cols: the node holding the new row, or NULL when
 * the key exists already. */
static SaRowNode *
sa_insert(SaCall *c, SaOp *op, SaRowNode *node)
{
	StringInfoData q,
				vl;
	int			n = op->nkey + op->ncols;
	Oid		   *types = palloc(sizeof(Oid) * (n > 0 ? n : 1));
	Datum	   *vals = palloc(sizeof(Datum) * (n > 0 ? n : 1));
	char	   *nulls = palloc(n + 1);
	int			k = 0;

	initStringInfo(&q);
	initStringInfo(&vl);
	appendStringInfo(&q, "INSERT INTO %s AS t (", op->t->qualname);
	for (int s = 0; s < 2; s++)
	{
		SaVal	   *vs = s == 0 ? op->key : op->cols;
		int			nv = s == 0 ? op->nkey : op->ncols;

		for (int i = 0; i < nv; i++)
		{
			SaAtt	   *a = &op->t->atts[vs[i].attnum - 1];

			if (s == 1 && sa_find(op->key, op->nkey, vs[i].attnum) != NULL)
				continue;		/* a key column repeated in cols */
			appendStringInfo(&q, "%s%s", k > 0 ? ", " : "", quote_identifier(a->name));
			appendStringInfo(&vl, "%s$%d", k > 0 ? ", " : "", k + 1);
			types[k] = a->typid;
			vals[k] = vs[i].datum;
			nulls[k] = vs[i].isnull ? 'n' : ' ';
			k++;
		}
	}
	nulls[k] = '\0';
	appendStringInfo(&q, ") VALUES (%s) ON CONFLICT DO NOTHING RETURNING ", vl.data);
	sa_row_list(&q, op->t, "t.");
	if (sa_exec(q.data, k, types, vals, nulls, false, SPI_OK_INSERT_RETURNING) == 0)
	{
		SPI_freetuptable(SPI_tuptable);
		return NULL;
	}
	return sa_row_written(c, op, node);
}

/* UPDATE the locked row setting the given values; the node holding it now. */
static SaRowNode *
sa_update(SaCall *c, SaOp *op, SaRowNode *node, SaVal **set, int nset)
{
	StringInfoData q;
	Oid		   *types = palloc(sizeof(Oid) * (nset + 2));
	Datum	   *vals = palloc(sizeof(Datum) * (nset + 2));
	char	   *nulls = palloc(nset + 3);

	initStringInfo(&q);
	appendStringInfo(&q, "UPDATE %s AS t SET ", op->t->qualname);
	for (int i = 0; i < nset; i++)
	{
		SaAtt	   *a = &op->t->atts[set[i]->attnum - 1];

		appendStringInfo(&q, "%s%s = $%d", i > 0 ? ", " : "", quote_identifier(a->name), i + 1);
		types[i] = a->typid;
		vals[i] = set[i]->datum;
		nulls[i] = set[i]->isnull ? 'n' : ' ';
	}
	appendStringInfo(&q, " WHERE t.ctid = $%d AND t.tableoid = $%d RETURNING ", nset + 1, nset + 2);
	sa_row_list(&q, op->t, "t.");
	types[nset] = TIDOID;
	vals[nset] = PointerGetDatum(&node->row.ctid);
	nulls[nset] = ' ';
	types[nset + 1] = OIDOID;
	vals[nset + 1] = ObjectIdGetDatum(node->row.tableoid);
	nulls[nset + 1] = ' ';
	nulls[nset + 2] = '\0';
	if (sa_exec(q.data, nset + 2, types, vals, nulls, false, SPI_OK_UPDATE_RETURNING) != 1)
		elog(ERROR, "the locked row of %s vanished", op->t->qualname);
	return sa_row_written(c, op, node);
}

static void
sa_delete(SaOp *op, SaRowNode *node)
{
	StringInfoData q;
	Oid			types[2] = {TIDOID, OIDOID};
	Datum		vals[2];

	initStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM %s WHERE ctid = $1 AND tableoid = $2", op->t->qualname);
	vals[0] = PointerGetDatum(&node->row.ctid);
	vals[1] = ObjectIdGetDatum(node->row.tableoid);
	if (sa_exec(q.data, 2, types, vals, NULL, false, SPI_OK_DELETE) != 1)
		elog(ERROR, "the locked row of %s vanished", op->t->qualname);
	node->row.found = false;
}

/* ------------------------------------------------------------------------
 * Clocks (lww)
 *
 * A row's row_clocks entry is read with its row when the segment locks it
 * (one probe per key, in the pre-lock), kept in the row's map node, changed
 * there by each write, and written back once at the end of the segment:
 * new entries by one INSERT, existing ones by one UPDATE that finds them by
 * ctid.  The entry of a key whose row is locked cannot change under us (only
 * apply_ops writes row_clocks, under that lock); for a key with no row, a
 * concurrent change shows as a write that misses, and the segment runs
 * again.
 * ---------------------------------------------------------------------- */

typedef struct SaClocks
{
	bool		valid;			/* the entry describes the row version we see */
	Jsonb	   *clocks;
	SaClock		base;
	SaClock		plain;			/* clock of a plain-SQL row version (or deletion) */
} SaClocks;

/* The clock of row version xmin, written by plain SQL. */
static int64
sa_xmin_hlc(TransactionId xmin)
{
	TimestampTz ts;
	int64		ms;

	if (!track_commit_timestamp || TransactionIdIsCurrentTransactionId(xmin))
		return sa_now_hlc();
	if (!TransactionIdIsNormal(xmin) || !TransactionIdGetCommitTsData(xmin, &ts, NULL))
		return 0;				/* frozen or older than the commit timestamps kept */
	ms = ts / 1000 + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
	return ms << 16;
}

/* Fill node's entry from row r of the current SPI result, whose columns
 * from `first` on are ctid, row_xmin, clocks, base_hlc, base_origin. */
static void
sa_clk_take(SaCall *c, SaRowNode *node, uint64 r, int first)
{
	HeapTuple	tup = SPI_tuptable->vals[r];
	TupleDesc	d = SPI_tuptable->tupdesc;
	bool		isnull;
	Datum		v;
	MemoryContext old;

	node->clk_loaded = true;
	v = SPI_getbinval(tup, d, first, &isnull);
	node->clk_found = node->clk_in_db = !isnull;
	if (isnull)
		return;
	node->clk_ctid = *(ItemPointer) DatumGetPointer(v);
	v = SPI_getbinval(tup, d, first + 1, &isnull);
	node->clk_tomb = isnull;
	node->clk_xmin = isnull ? InvalidTransactionId : DatumGetTransactionId(v);
	old = MemoryContextSwitchTo(c->segcxt);
	node->clk_clocks = DatumGetJsonbPCopy(SPI_getbinval(tup, d, first + 2, &isnull));
	node->clk_base.hlc = DatumGetInt64(SPI_getbinval(tup, d, first + 3, &isnull));
	node->clk_base.origin = SPI_getvalue(tup, d, first + 4);
	MemoryContextSwitchTo(old);
}

/* Read the entries of keys (n canonical key texts of table relid) into
 * their nodes, in one statement. */
static void
sa_clk_load(SaCall *c, Oid relid, SaRowNode **nodes, int n)
{
	Oid			types[2] = {TEXTARRAYOID, OIDOID};
	Datum		args[2];
	Datum	   *keys = palloc(sizeof(Datum) * n);

	for (int i = 0; i < n; i++)
	{
		keys[i] = CStringGetTextDatum(nodes[i]->key);
		nodes[i]->clk_loaded = true;	/* none found: no entry */
		nodes[i]->clk_found = nodes[i]->clk_in_db = false;
	}
	args[0] = sa_array(keys, NULL, n, TEXTOID);
	args[1] = ObjectIdGetDatum(relid);
	sa_exec("SELECT k.key, x.ctid, x.row_xmin, x.clocks, x.base_hlc, x.base_origin "
			"FROM pg_catalog.unnest($1) AS k(key) CROSS JOIN LATERAL "
			"(SELECT e.ctid, e.row_xmin, e.clocks, e.base_hlc, e.base_origin "
			"FROM softadastra.row_clocks AS e WHERE e.relid = $2 AND e.key = k.key OFFSET 0) AS x",
			2, types, args, NULL, false, SPI_OK_SELECT);	/* not read-only: a fresh snapshot,
															 * after the row locks */
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *k = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);
		SaRowNode  *node = sa_row_find(c, relid, k, false);

		if (node != NULL)
			sa_clk_take(c, node, r, 2);
	}
	SPI_freetuptable(SPI_tuptable);
}

/* The clocks that decide lww for node's row as it is now. */
static void
sa_read_clocks(SaCall *c, SaOp *op, SaRowNode *node, SaClocks *ck)
{
	const SaRow *row = &node->row;

	if (!node->clk_loaded)
		sa_clk_load(c, op->t->relid, &node, 1);
	memset(ck, 0, sizeof *ck);
	ck->base.origin = "pg";
	ck->plain.origin = "pg";
	if (node->clk_found)
	{
		ck->valid = row->found ? (!node->clk_tomb && node->clk_xmin == row->xmin) : node->clk_tomb;
		ck->clocks = node->clk_clocks;
		ck->base = node->clk_base;
	}
	if (row->found)
		ck->plain.hlc = sa_xmin_hlc(row->xmin);
	else
		ck->plain.hlc = sa_now_hlc();	/* deleted by plain SQL: when is unknown */
}

/* Clock of column name of the current row (or of its deletion). */
static SaClock
sa_col_clock(const SaClocks *ck, const char *name)
{
	SaClock		c;

	if (!ck->valid)
		return ck->plain;
	c = ck->base;
	if (name != NULL && ck->clocks != NULL)
	{
		JsonbValue *v = getKeyJsonValueFromContainer(&ck->clocks->root, name, strlen(name), NULL);

		if (v != NULL && v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data))
		{
			JsonbValue *h = getIthJsonbValueFromContainer(v->val.binary.data, 0);
			JsonbValue *o = getIthJsonbValueFromContainer(v->val.binary.data, 1);

			if (h != NULL && o != NULL && o->type == jbvString && sa_json_int64(h, 0, &c.hlc))
				c.origin = pnstrdup(o->val.string.val, o->val.string.len);
		}
	}
	return c;
}

/* The newest clock of any column of the row. */
static SaClock
sa_row_clock(const SaOp *op, const SaClocks *ck)
{
	SaClock		best = sa_col_clock(ck, NULL);

	for (int i = 0; i < op->t->natts; i++)
		if (op->t->atts[i].name != NULL)
		{
			SaClock		c = sa_col_clock(ck, op->t->atts[i].name);

			if (sa_clock_gt(c, best))
				best = c;
		}
	return best;
}

/*
 * After apply_ops wrote node's row (before: the version it replaced) or
 * deleted it: its entry, in the node, to be written at the segment's end.
 * written: the columns written with the op's clock.  An update keeps the
 * other columns' clocks when the entry still describes the version it
 * replaced; otherwise they all take that version's clock.
 */
static void
sa_write_clocks(SaCall *c, SaOp *op, const SaRow *before, SaRowNode *node, bool deleted,
				SaVal **written, int nwritten)
{
	MemoryContext old;
	JsonbParseState *ps = NULL;
	JsonbValue *res;
	Jsonb	   *mine;

	if (!node->clk_loaded)
		sa_clk_load(c, op->t->relid, &node, 1);
	old = MemoryContextSwitchTo(c->segcxt);
	if (deleted || !before->found)
	{
		/* a tombstone, or an insert: every column (defaults too) has the
		 * op's clock, which the base says alone */
		static Jsonb *empty = NULL;

		if (empty == NULL)
		{
			MemoryContext top = MemoryContextSwitchTo(TopMemoryContext);

			empty = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
			MemoryContextSwitchTo(top);
		}
		node->clk_clocks = empty;
		node->clk_base.hlc = op->hlc;
		node->clk_base.origin = pstrdup(op->origin);
	}
	else
	{
		/* {"col": [hlc, "origin"], ...} of the columns written, built
		 * without a text round trip */
		Datum		hlc = DirectFunctionCall1(int8_numeric, Int64GetDatum(op->hlc));

		pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
		for (int i = 0; i < nwritten; i++)
		{
			JsonbValue	k,
						h,
						o;

			k.type = jbvString;
			k.val.string.val = written[i]->name;
			k.val.string.len = strlen(written[i]->name);
			h.type = jbvNumeric;
			h.val.numeric = DatumGetNumeric(hlc);
			o.type = jbvString;
			o.val.string.val = op->origin;
			o.val.string.len = strlen(op->origin);
			pushJsonbValue(&ps, WJB_KEY, &k);
			pushJsonbValue(&ps, WJB_BEGIN_ARRAY, NULL);
			pushJsonbValue(&ps, WJB_ELEM, &h);
			pushJsonbValue(&ps, WJB_ELEM, &o);
			pushJsonbValue(&ps, WJB_END_ARRAY, NULL);
		}
		res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
		mine = JsonbValueToJsonb(res);
		if (node->clk_found && !node->clk_tomb && node->clk_xmin == before->xmin)
			node->clk_clocks = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
																  JsonbPGetDatum(node->clk_clocks),
																  JsonbPGetDatum(mine)));
		else
		{
			node->clk_clocks = mine;
			node->clk_base.hlc = sa_xmin_hlc(before->xmin);
			node->clk_base.origin = "pg";
		}
	}
	node->clk_found = true;
	node->clk_tomb = deleted;
	node->clk_xmin = deleted ? InvalidTransactionId : GetCurrentTransactionId();
	if (!node->clock_pending)
	{
		if (c->npend == c->cappend)
		{
			c->cappend = c->cappend == 0 ? 64 : c->cappend * 2;
			c->pend = c->pend == NULL ? palloc(sizeof(SaRowNode *) * c->cappend)
				: repalloc(c->pend, sizeof(SaRowNode *) * c->cappend);
		}
		c->pend[c->npend++] = node;
		node->clock_pending = true;
	}
	MemoryContextSwitchTo(old);
}

/* Write the entries the segment changed: new ones by one INSERT, existing
 * ones by one UPDATE (by ctid). */
static void
sa_flush_clocks(SaCall *c)
{
	int			n = c->npend;
	SaRowNode **ins = palloc(sizeof(SaRowNode *) * (n > 0 ? n : 1));
	SaRowNode **upd = palloc(sizeof(SaRowNode *) * (n > 0 ? n : 1));
	int			nins = 0,
				nupd = 0;

	if (n == 0)
		return;
	for (int i = 0; i < n; i++)
	{
		if (c->pend[i]->clk_in_db)
			upd[nupd++] = c->pend[i];
		else
			ins[nins++] = c->pend[i];
		c->pend[i]->clock_pending = false;
	}
	c->npend = 0;
	c->in_clock_flush = true;	/* a unique violation here: a concurrent session */
	for (int pass = 0; pass < 2; pass++)
	{
		SaRowNode **v = pass == 0 ? ins : upd;
		int			m = pass == 0 ? nins : nupd;
		Datum	   *a0 = palloc(sizeof(Datum) * (m > 0 ? m : 1)),
				   *a1 = palloc(sizeof(Datum) * (m > 0 ? m : 1)),
				   *xmin = palloc(sizeof(Datum) * (m > 0 ? m : 1)),
				   *clocks = palloc(sizeof(Datum) * (m > 0 ? m : 1)),
				   *bh = palloc(sizeof(Datum) * (m > 0 ? m : 1)),
				   *bo = palloc(sizeof(Datum) * (m > 0 ? m : 1));
		bool	   *xnull = palloc0(sizeof(bool) * (m > 0 ? m : 1));
		Oid			types[6] = {InvalidOid, TEXTARRAYOID, XIDARRAYOID, JSONBARRAYOID,
		INT8ARRAYOID, TEXTARRAYOID};
		Datum		args[6];
		uint64		done;

		if (m == 0)
			continue;
		for (int i = 0; i < m; i++)
		{
			a0[i] = pass == 0 ? ObjectIdGetDatum(v[i]->relid) : PointerGetDatum(&v[i]->clk_ctid);
			a1[i] = CStringGetTextDatum(v[i]->key);
			xmin[i] = TransactionIdGetDatum(v[i]->clk_xmin);
			xnull[i] = v[i]->clk_tomb;
			clocks[i] = JsonbPGetDatum(v[i]->clk_clocks);
			bh[i] = Int64GetDatum(v[i]->clk_base.hlc);
			bo[i] = CStringGetTextDatum(v[i]->clk_base.origin);
		}
		types[0] = pass == 0 ? OIDARRAYOID : TIDARRAYOID;
		args[0] = sa_array(a0, NULL, m, pass == 0 ? OIDOID : TIDOID);
		args[1] = sa_array(a1, NULL, m, TEXTOID);
		args[2] = sa_array(xmin, xnull, m, XIDOID);
		args[3] = sa_array(clocks, NULL, m, JSONBOID);
		args[4] = sa_array(bh, NULL, m, INT8OID);
		args[5] = sa_array(bo, NULL, m, TEXTOID);
		if (pass == 0)
			done = sa_exec("INSERT INTO softadastra.row_clocks AS rc "
						   "(relid, key, row_xmin, clocks, base_hlc, base_origin) "
						   "SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
						   "pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), "
						   "pg_catalog.unnest($6)) RETURNING rc.relid, rc.key, rc.ctid",
						   6, types, args, NULL, false, SPI_OK_INSERT_RETURNING);
		else
			done = sa_exec("UPDATE softadastra.row_clocks AS rc SET row_xmin = u.row_xmin, "
						   "clocks = u.clocks, base_hlc = u.base_hlc, base_origin = u.base_origin "
						   "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
						   "pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), "
						   "pg_catalog.unnest($6)) AS u(sa_ctid, key, row_xmin, clocks, base_hlc, base_origin) "
						   "WHERE rc.ctid = u.sa_ctid AND rc.key = u.key RETURNING rc.relid, rc.key, rc.ctid",
						   6, types, args, NULL, false, SPI_OK_UPDATE_RETURNING);
		if (done != (uint64) m)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("row clocks were changed by another session meanwhile")));
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	d = SPI_tuptable->tupdesc;
			bool		isnull;
			SaRowNode  *node = sa_row_find(c, DatumGetObjectId(SPI_getbinval(tup, d, 1, &isnull)),
										   SPI_getvalue(tup, d, 2), false);

			if (node != NULL)
			{
				node->clk_ctid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tup, d, 3, &isnull));
				node->clk_in_db = true;
			}
		}
		SPI_freetuptable(SPI_tuptable);
	}
	c->in_clock_flush = false;
}

/* ------------------------------------------------------------------------
 * The ledger, rejections, the loop message
 * ---------------------------------------------------------------------- */

static const char *
sa_values_json(SaVal *vals, int n, StringInfo b)
{
	resetStringInfo(b);
	appendStringInfoChar(b, '{');
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoString(b, ", ");
		escape_json(b, vals[i].name);
		appendStringInfoString(b, ": ");
		sa_ledger_value(b, vals[i].text, vals[i].isnull);
	}
	appendStringInfoChar(b, '}');
	return b->data;
}

/* The local values of the columns the op names (key, cols, base). */
static const char *
sa_local_json(SaOp *op, const SaRow *row, StringInfo b)
{
	bool	   *seen = palloc0(sizeof(bool) * (op->t->natts + 1));
	bool		first = true;

	resetStringInfo(b);
	appendStringInfoChar(b, '{');
	for (int s = 0; s < 3; s++)
	{
		SaVal	   *vs = s == 0 ? op->key : s == 1 ? op->cols : op->base;
		int			nv = s == 0 ? op->nkey : s == 1 ? op->ncols : op->nbase;

		for (int i = 0; i < nv; i++)
		{
			char	   *t;

			if (seen[vs[i].attnum])
				continue;
			seen[vs[i].attnum] = true;
			t = sa_local_text(row, vs[i].attnum);
			if (!first)
				appendStringInfoString(b, ", ");
			first = false;
			escape_json(b, vs[i].name);
			appendStringInfoString(b, ": ");
			sa_ledger_value(b, t, t == NULL);
		}
	}
	appendStringInfoChar(b, '}');
	return b->data;
}

static const char *
sa_resolution_name(int resolution)
{
	static const char *const names[] = {"applied_remote", "kept_local", "merged", "open"};

	return names[resolution];
}

enum
{
	SA_APPLIED_REMOTE,
	SA_KEPT_LOCAL,
	SA_MERGED,
	SA_OPEN
};

static int64
sa_record_conflict(SaCall *c, SaOp *op, const char *kind, char **cols, int ncols,
				   const SaRow *row, int resolution)
{
	Oid			types[13] = {TEXTOID, JSONBOID, TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID,
	TEXTARRAYOID, JSONBOID, JSONBOID, JSONBOID, TEXTOID, TEXTOID};
	Datum		vals[13];
	char		nulls[14] = "             ";
	StringInfoData b;
	bool		isnull;

	initStringInfo(&b);
	vals[0] = CStringGetTextDatum(op->t->qualname);
	vals[1] = JsonbPGetDatum(sa_keyjson(op));
	vals[2] = CStringGetTextDatum(kind);
	vals[3] = CStringGetTextDatum(c->peer);
	vals[4] = Int64GetDatum(c->epoch);
	vals[5] = Int64GetDatum(op->seq);
	vals[6] = Int64GetDatum(op->hlc);
	vals[7] = sa_text_array(cols, ncols);
	if (op->nbase > 0)
		vals[8] = sa_jsonb_from_text(sa_values_json(op->base, op->nbase, &b));
	else
		nulls[8] = 'n';
	if (row->found)
		vals[9] = sa_jsonb_from_text(sa_local_json(op, row, &b));
	else
		nulls[9] = 'n';
	if (op->kind != SA_DELETE)
		vals[10] = sa_jsonb_from_text(sa_values_json(op->cols, op->ncols, &b));
	else
		nulls[10] = 'n';
	vals[11] = CStringGetTextDatum(sa_strategy_names[op->t->strategy]);
	vals[12] = CStringGetTextDatum(sa_resolution_name(resolution));
	sa_exec("INSERT INTO softadastra.conflicts (table_name, key, kind, origin, epoch, op_seq, "
			"op_hlc, columns, base, local, remote, strategy, resolution, resolved_at, resolved_by) "
			"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
			"CASE WHEN $13 = 'open' THEN NULL ELSE now() END, "
			"CASE WHEN $13 = 'open' THEN NULL ELSE 'strategy:' || $12 END) RETURNING id",
			13, types, vals, nulls, false, SPI_OK_INSERT_RETURNING);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
sa_record_rejection(SaCall *c, SaOp *op, const char *message)
{
	Oid			types[5] = {TEXTOID, INT8OID, INT8OID, JSONBOID, TEXTOID};
	Datum		vals[5];
	char		nulls[6] = "     ";

	vals[0] = CStringGetTextDatum(c->peer);
	vals[1] = Int64GetDatum(c->epoch);
	if (op->has_seq)
		vals[2] = Int64GetDatum(op->seq);
	else
		nulls[2] = 'n';
	vals[3] = JsonbPGetDatum(JsonbValueToJsonb(&op->elem));
	vals[4] = CStringGetTextDatum(message);
	sa_exec("INSERT INTO softadastra.rejections (peer, epoch, op_seq, op, message) "
			"VALUES ($1, $2, $3, $4, $5)", 5, types, vals, nulls, false, SPI_OK_INSERT);
}

/* ------------------------------------------------------------------------
 * Writes
 *
 * An op's write is queued, and the queue is written in as few statements
 * as its order allows: consecutive writes of one kind to one table with
 * the same columns become one INSERT ... SELECT FROM unnest(...), UPDATE
 * ... FROM unnest(...) (rows found by ctid) or DELETE ... WHERE ctid =
 * ANY(...).  The queue is flushed, in order, before an op touches a row
 * with a queued write, before a conflict is recorded, and at the end of
 * the segment.  Writes that cannot go through arrays (tables without a
 * primary key, partitioned tables, array-typed columns, updates of the
 * key) are made at once, one statement each.
 * ---------------------------------------------------------------------- */

typedef enum SaWriteKind
{
	SA_W_INSERT,
	SA_W_UPDATE,
	SA_W_DELETE
} SaWriteKind;

typedef struct SaWrite
{
	SaWriteKind kind;
	SaTable    *t;
	SaOp	   *op;
	SaRowNode  *node;
	int			nvals;
	SaVal	  **vals;			/* insert: every value; update: those set */
} SaWrite;

/* The loop: tell the bridge's decoder which ops the next changes come from. */
static void
sa_emit_origin(SaCall *c, int64 from, int64 to)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"peer\": ");
	escape_json(&b, c->peer);
	appendStringInfo(&b, ", \"epoch\": " INT64_FORMAT ", \"from\": " INT64_FORMAT
					 ", \"to\": " INT64_FORMAT "}", c->epoch, from, to);
	SA_LOG_LOGICAL_MESSAGE("softadastra", b.data, b.len, true);
}

/*
 * The loop's last word: the ops (from..to] this call finished, changed rows
 * or not.  The bridge records it with the transaction, so an edge learns
 * when its replica holds the result of ops that wrote nothing (and come
 * back in no change); "final" says no change of theirs follows.
 */
static void
sa_emit_final(SaCall *c, int64 from, int64 to)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"peer\": ");
	escape_json(&b, c->peer);
	appendStringInfo(&b, ", \"epoch\": " INT64_FORMAT ", \"from\": " INT64_FORMAT
					 ", \"to\": " INT64_FORMAT ", \"final\": true}", c->epoch, from, to);
	SA_LOG_LOGICAL_MESSAGE("softadastra", b.data, b.len, true);
}

/* Can these values of t go through arrays? */
static bool
sa_batchable(const SaTable *t, SaWriteKind kind, SaVal **vals, int n)
{
	if (t->npk == 0 || t->relkind != RELKIND_RELATION)
		return false;
	for (int i = 0; i < n; i++)
	{
		const SaAtt *a = &t->atts[vals[i]->attnum - 1];

		if (!OidIsValid(a->arraytype))
			return false;		/* an array column, or a type without arrays */
		if (kind == SA_W_UPDATE)
			for (int k = 0; k < t->npk; k++)
				if (t->pk[k] == vals[i]->attnum)
					return false;	/* the key changes: found again by its new key */
	}
	return true;
}

static bool
sa_same_group(const SaWrite *a, const SaWrite *b)
{
	if (a->kind != b->kind || a->t != b->t || a->nvals != b->nvals)
		return false;
	for (int i = 0; i < a->nvals; i++)
		if (a->vals[i]->attnum != b->vals[i]->attnum)
			return false;
	return true;
}

/* One array parameter: column attnum's values over the group. */
static Datum
sa_group_array(const SaWrite *w, int n, int col)
{
	const SaAtt *a = &w[0].t->atts[w[0].vals[col]->attnum - 1];
	Datum	   *d = palloc(sizeof(Datum) * n);
	bool	   *nulls = palloc(sizeof(bool) * n);

	for (int i = 0; i < n; i++)
	{
		d[i] = w[i].vals[col]->datum;
		nulls[i] = w[i].vals[col]->isnull;
	}
	return sa_array(d, nulls, n, a->typid);
}

/* Write n queued writes of one group (sa_same_group) in one statement. */
static void
sa_flush_group(SaCall *c, SaWrite *w, int n)
{
	SaTable    *t = w[0].t;
	int			nv = w[0].nvals;
	int			np = nv + (w[0].kind == SA_W_INSERT ? 0 : 1);
	Oid		   *types = palloc(sizeof(Oid) * (np > 0 ? np : 1));
	Datum	   *args = palloc(sizeof(Datum) * (np > 0 ? np : 1));
	StringInfoData q;
	uint64		done;

	sa_emit_origin(c, w[0].op->seq, w[n - 1].op->seq);
	initStringInfo(&q);
	if (w[0].kind != SA_W_INSERT)
	{
		Datum	   *ctids = palloc(sizeof(Datum) * n);

		for (int i = 0; i < n; i++)
			ctids[i] = PointerGetDatum(&w[i].node->row.ctid);
		types[0] = TIDARRAYOID;
		args[0] = sa_array(ctids, NULL, n, TIDOID);
	}
	for (int k = 0; k < nv; k++)
	{
		int			p = np - nv + k;

		types[p] = t->atts[w[0].vals[k]->attnum - 1].arraytype;
		args[p] = sa_group_array(w, n, k);
	}

	switch (w[0].kind)
	{
		case SA_W_INSERT:
			appendStringInfo(&q, "INSERT INTO %s AS t (", t->qualname);
			for (int k = 0; k < nv; k++)
				appendStringInfo(&q, "%s%s", k > 0 ? ", " : "",
								 quote_identifier(t->atts[w[0].vals[k]->attnum - 1].name));
			appendStringInfoString(&q, ") SELECT * FROM ROWS FROM (");
			for (int k = 0; k < nv; k++)
				appendStringInfo(&q, "%spg_catalog.unnest($%d)", k > 0 ? ", " : "", k + 1);
			/* no ON CONFLICT: the keys were missing when locked; one another
			 * session inserted since fails this with a unique violation, and
			 * the segment runs again writing op by op (see sa_run_segment) */
			appendStringInfoString(&q, ") RETURNING ");
			sa_row_list(&q, t, "t.");
			done = sa_exec(q.data, np, types, args, NULL, false, SPI_OK_INSERT_RETURNING);
			if (done != (uint64) n)
				elog(ERROR, "%d rows of %s were not inserted", n - (int) done, t->qualname);
			break;
		case SA_W_UPDATE:
			appendStringInfo(&q, "UPDATE %s AS t SET (", t->qualname);
			for (int k = 0; k < nv; k++)
				appendStringInfo(&q, "%s%s", k > 0 ? ", " : "",
								 quote_identifier(t->atts[w[0].vals[k]->attnum - 1].name));
			appendStringInfoString(&q, ") = ROW(");
			for (int k = 0; k < nv; k++)
				appendStringInfo(&q, "%su.v%d", k > 0 ? ", " : "", k + 1);
			appendStringInfoString(&q, ") FROM ROWS FROM (pg_catalog.unnest($1)");
			for (int k = 0; k < nv; k++)
				appendStringInfo(&q, ", pg_catalog.unnest($%d)", k + 2);
			appendStringInfoString(&q, ") AS u(sa_ctid");
			for (int k = 0; k < nv; k++)
				appendStringInfo(&q, ", v%d", k + 1);
			appendStringInfoString(&q, ") WHERE t.ctid = u.sa_ctid RETURNING ");
			sa_row_list(&q, t, "t.");
			done = sa_exec(q.data, np, types, args, NULL, false, SPI_OK_UPDATE_RETURNING);
			if (done != (uint64) n)
				elog(ERROR, "%d locked rows of %s vanished", n - (int) done, t->qualname);
			break;
		case SA_W_DELETE:
			appendStringInfo(&q, "DELETE FROM %s WHERE ctid = ANY ($1)", t->qualname);
			done = sa_exec(q.data, 1, types, args, NULL, false, SPI_OK_DELETE);
			if (done != (uint64) n)
				elog(ERROR, "%d locked rows of %s vanished", n - (int) done, t->qualname);
			SPI_freetuptable(SPI_tuptable);
			for (int i = 0; i < n; i++)
				w[i].node->write_pending = false;
			return;
	}
	/* the new versions, into the map by key */
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		SaRow		row;
		SaRowNode  *node;

		memset(&row, 0, sizeof row);
		sa_row_take(c, t, r, &row);
		node = sa_row_find(c, t->relid, sa_row_key(t, &row), true);
		node->row = row;
		node->write_pending = false;
	}
	SPI_freetuptable(SPI_tuptable);
}

/* Write every queued write, in order. */
static void
sa_flush_writes(SaCall *c)
{
	int			i = 0;

	c->in_flush = true;
	while (i < c->nwq)
	{
		int			j = i + 1;

		while (j < c->nwq && sa_same_group(&c->wq[i], &c->wq[j]))
			j++;
		sa_flush_group(c, &c->wq[i], j - i);
		i = j;
	}
	c->nwq = 0;
	c->in_flush = false;
}

/*
 * The op's write: queued, or made at once (see above).  Returns the node
 * holding the row, or NULL for an insert that found its key taken (made at
 * once only; a queued insert that does fails the segment, to be run again).
 */
static SaRowNode *
sa_write(SaCall *c, SaWriteKind kind, SaOp *op, SaRowNode *node, SaVal **vals, int n)
{
	SaWrite    *w;
	MemoryContext old;

	if (c->no_batch || !sa_batchable(op->t, kind, vals, n))
	{
		if (c->nwq > 0)
			sa_flush_writes(c);	/* keep the order */
		sa_emit_origin(c, op->seq, op->seq);
		switch (kind)
		{
			case SA_W_INSERT:
				{
					SaOp		ins = *op;
					SaVal	   *cols = palloc(sizeof(SaVal) * (n > 0 ? n : 1));
					int			k = 0;

					for (int i = 0; i < n; i++)
						if (sa_find(op->key, op->nkey, vals[i]->attnum) == NULL)
							cols[k++] = *vals[i];
					ins.cols = cols;
					ins.ncols = k;
					return sa_insert(c, &ins, node);
				}
			case SA_W_UPDATE:
				return sa_update(c, op, node, vals, n);
			case SA_W_DELETE:
				sa_delete(op, node);
				return node;
		}
	}
	old = MemoryContextSwitchTo(c->segcxt);
	if (c->nwq == c->capwq)
	{
		c->capwq = c->capwq == 0 ? 64 : c->capwq * 2;
		c->wq = c->wq == NULL ? palloc(sizeof(SaWrite) * c->capwq)
			: repalloc(c->wq, sizeof(SaWrite) * c->capwq);
	}
	w = &c->wq[c->nwq++];
	w->kind = kind;
	w->t = op->t;
	w->op = op;
	w->node = node;
	w->nvals = n;
	w->vals = palloc(sizeof(SaVal *) * (n > 0 ? n : 1));
	for (int i = 0; i < n; i++)
	{
		/* the struct may live in the op's memory; its datum lives in the
		 * segment's (sa_prepare_op) */
		SaVal	   *v = palloc(sizeof(SaVal));

		*v = *vals[i];
		w->vals[i] = v;
	}
	MemoryContextSwitchTo(old);
	node->write_pending = true;
	if (kind == SA_W_DELETE)
		node->row.found = false;
	return node;
}

/* ------------------------------------------------------------------------
 * Applying one op
 * ---------------------------------------------------------------------- */

/*
 * Apply op (validated, watermark + 1).  Adds its result.  May ERROR (the
 * segment turns bad-input errors into a rejection).
 */
static void
sa_apply_one(SaCall *c, SaOp *op)
{
	char	   *msg = op->reject != NULL ? op->reject : op->prep_msg;
	SaRowNode  *node;
	SaRow	   *row;
	SaRow		before;
	SaClocks	ck;
	bool		lww;
	int			attempts = 0;

	if (msg != NULL)
	{
		sa_record_rejection(c, op, msg);
		sa_add_res(c, true, op->seq, "rejected", 0, msg);
		return;
	}
	lww = op->t->strategy == SA_LWW;

	Assert(op->prepared);
	node = sa_row_get(c, op);
	if (node->write_pending)
		sa_flush_writes(c);		/* its row must be current */
relock:
	row = &node->row;
	before = *row;
	memset(&ck, 0, sizeof ck);	/* read when a lww decision needs it */

	if (op->kind == SA_INSERT && !row->found)
	{
		SaRowNode  *now;
		SaVal	  **w = palloc(sizeof(SaVal *) * (op->nkey + op->ncols));
		int			nw = 0;

		for (int i = 0; i < op->nkey; i++)
			w[nw++] = &op->key[i];
		for (int i = 0; i < op->ncols; i++)
			if (sa_find(op->key, op->nkey, op->cols[i].attnum) == NULL)
				w[nw++] = &op->cols[i];
		if ((now = sa_write(c, SA_W_INSERT, op, node, w, nw)) == NULL)
		{
			/* a concurrent insert of the key, or another unique constraint */
			if (++attempts > 2)
				ereport(ERROR,
						(errcode(ERRCODE_UNIQUE_VIOLATION),
						 errmsg("insert into %s conflicts with a unique constraint other than its key",
								op->t->qualname)));
			sa_lock_row(c, op, node);
			goto relock;
		}
		if (lww)
			sa_write_clocks(c, op, &before, now, false, w, nw);
		sa_add_res(c, true, op->seq, "applied", 0, NULL);
		return;
	}

	if (op->kind == SA_INSERT || op->kind == SA_UPDATE)
	{
		/* row found (insert_exists / update) or missing (update_missing) */
		SaVal	  **set = palloc(sizeof(SaVal *) * (op->ncols + op->nkey + 1));
		char	  **conf = palloc(sizeof(char *) * (op->ncols + op->nkey + 1));
		int			nset = 0,
					nconf = 0,
					nwon = 0;
		const char *kind = op->kind == SA_INSERT ? "insert_exists" : "update_differ";
		int			resolution;
		int64		cid = 0;

		if (!row->found)
		{
			/* update_missing */
			SaClock		del;
			SaClock		mine = {op->hlc, op->origin};
			bool		take;

			if (lww)
				sa_read_clocks(c, op, node, &ck);
			del = sa_col_clock(&ck, NULL);

			/* del: when apply_ops deleted it, else (plain SQL) now */
			if (op->t->strategy == SA_EDGE_WINS)
				take = true;
			else if (lww)
				take = sa_clock_gt(mine, del);
			else
				take = false;
			for (int i = 0; i < op->ncols; i++)
				conf[nconf++] = op->cols[i].name;
			resolution = op->t->strategy == SA_MANUAL ? SA_OPEN : take ? SA_APPLIED_REMOTE : SA_KEPT_LOCAL;
			cid = sa_record_conflict(c, op, "update_missing", conf, nconf, row, resolution);
			if (take)
			{
				SaRowNode  *now;
				SaVal	   *all = palloc(sizeof(SaVal) * (op->ncols + op->nbase));
				int			n = 0;
				SaVal	  **w;

				/* the row as the edge has it: base, overridden by cols */
				for (int i = 0; i < op->ncols; i++)
					all[n++] = op->cols[i];
				for (int i = 0; i < op->nbase; i++)
					if (sa_find(op->cols, op->ncols, op->base[i].attnum) == NULL &&
						sa_find(op->key, op->nkey, op->base[i].attnum) == NULL)
						all[n++] = op->base[i];
				w = palloc(sizeof(SaVal *) * (n + op->nkey));
				for (int i = 0; i < op->nkey; i++)
					w[i] = &op->key[i];
				for (int i = 0; i < n; i++)
					w[op->nkey + i] = &all[i];
				if ((now = sa_write(c, SA_W_INSERT, op, node, w, n + op->nkey)) == NULL)
					ereport(ERROR,
							(errcode(ERRCODE_UNIQUE_VIOLATION),
							 errmsg("re-inserting a deleted row of %s conflicts with a unique constraint",
									op->t->qualname)));
				if (lww)
					sa_write_clocks(c, op, &before, now, false, w, n + op->nkey);
			}
			sa_add_res(c, true, op->seq, "conflict", cid, NULL);
			return;
		}

		/* per column: which conflict, which are written */
		for (int s = 0; s < 2; s++)
		{
			SaVal	   *vs = s == 0 ? op->cols : op->key;
			int			nv = s == 0 ? op->ncols : op->nkey;

			if (s == 1 && op->kind == SA_UPDATE)
				break;			/* an update's key only finds the row */
			for (int i = 0; i < nv; i++)
			{
				SaVal	   *v = &vs[i];
				char	   *local = sa_local_text(row, v->attnum);
				bool		conflict;

				if (s == 1 && sa_find(op->cols, op->ncols, v->attnum) != NULL)
					continue;
				if (sa_text_eq(local, v->text))
					continue;	/* nothing to change */
				if (op->kind == SA_INSERT)
					conflict = true;
				else
				{
					SaVal	   *b = sa_find(op->base, op->nbase, v->attnum);

					conflict = b != NULL && !sa_text_eq(b->text, local);
				}
				if (!conflict)
				{
					set[nset++] = v;
					continue;
				}
				conf[nconf++] = v->name;
				switch (op->t->strategy)
				{
					case SA_EDGE_WINS:
						set[nset++] = v;
						nwon++;
						break;
					case SA_LWW:
						{
							SaClock		mine = {op->hlc, op->origin};

							sa_read_clocks(c, op, node, &ck);
							if (sa_clock_gt(mine, sa_col_clock(&ck, v->name)))
							{
								set[nset++] = v;
								nwon++;
							}
						}
						break;
					default:
						break;
				}
			}
		}
		if (nconf > 0)
		{
			if (op->t->strategy == SA_MANUAL)
				resolution = SA_OPEN;
			else if (nwon == nconf)
				resolution = SA_APPLIED_REMOTE;
			else if (nwon == 0)
				resolution = SA_KEPT_LOCAL;
			else
				resolution = SA_MERGED;
			cid = sa_record_conflict(c, op, kind, conf, nconf, row, resolution);
		}
		if (nset > 0)
		{
			SaRowNode  *now;

			now = sa_write(c, SA_W_UPDATE, op, node, set, nset);
			if (lww)
				sa_write_clocks(c, op, &before, now, false, set, nset);
		}
		sa_add_res(c, true, op->seq, nconf > 0 ? "conflict" : "applied", cid, NULL);
		return;
	}

	/* delete */
	if (!row->found)
	{
		int			resolution = op->t->strategy == SA_MANUAL ? SA_OPEN
			: op->t->strategy == SA_SERVER_WINS ? SA_KEPT_LOCAL : SA_APPLIED_REMOTE;
		int64		cid = sa_record_conflict(c, op, "delete_missing", NULL, 0, row, resolution);

		sa_add_res(c, true, op->seq, "conflict", cid, NULL);
		return;
	}
	{
		char	  **conf = palloc(sizeof(char *) * (op->nbase + 1));
		int			nconf = 0;
		bool		take = true;
		int64		cid = 0;

		for (int i = 0; i < op->nbase; i++)
		{
			char	   *local = sa_local_text(row, op->base[i].attnum);

			if (!sa_text_eq(local, op->base[i].text))
				conf[nconf++] = op->base[i].name;
		}
		if (nconf > 0)
		{
			SaClock		mine = {op->hlc, op->origin};
			int			resolution;

			switch (op->t->strategy)
			{
				case SA_EDGE_WINS:
					take = true;
					break;
				case SA_LWW:
					sa_read_clocks(c, op, node, &ck);
					take = sa_clock_gt(mine, sa_row_clock(op, &ck));
					break;
				default:
					take = false;
			}
			resolution = op->t->strategy == SA_MANUAL ? SA_OPEN : take ? SA_APPLIED_REMOTE : SA_KEPT_LOCAL;
			cid = sa_record_conflict(c, op, "delete_differ", conf, nconf, row, resolution);
		}
		if (take)
		{
			(void) sa_write(c, SA_W_DELETE, op, node, NULL, 0);
			if (lww)
				sa_write_clocks(c, op, &before, node, true, NULL, 0);
		}
		sa_add_res(c, true, op->seq, nconf > 0 ? "conflict" : "applied", cid, NULL);
	}
}

/* ------------------------------------------------------------------------
 * Segments
 * ---------------------------------------------------------------------- */

/* Errors that are the op's fault: they reject the op, not the batch. */
static bool
sa_is_bad_input(int sqlerrcode)
{
	int			cls = ERRCODE_TO_CATEGORY(sqlerrcode);

	return cls == ERRCODE_DATA_EXCEPTION ||
		cls == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		cls == ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION ||
		cls == ERRCODE_WITH_CHECK_OPTION_VIOLATION ||
		cls == ERRCODE_FEATURE_NOT_SUPPORTED ||
		cls == ERRCODE_INVALID_TEXT_REPRESENTATION ||
		cls == ERRCODE_RAISE_EXCEPTION ||
		cls == ERRCODE_TRIGGERED_ACTION_EXCEPTION;
}

static bool
sa_is_retryable(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE;
}

/*
 * Run ops [from, to) (parsed; the first one to apply has seq watermark + 1)
 * in one subtransaction, in three steps: prepare the ops it will apply
 * (tables, values), lock their rows in key order, apply them in seq order;
 * then write the row clocks they queued.  Returns -1 when all ran (or a gap
 * stopped them: c->gap); -2 after a deadlock or serialization failure (to
 * be run again); -3 when a write of several ops' rows failed on bad input
 * (to be run again writing each op's row at once, c->no_batch); else the index of the op whose bad input raised an error,
 * with *why its message.  Unless -1, the subtransaction was rolled back and
 * c's results and watermark are as they were.
 */
static int
sa_run_segment(SaCall *c, SaOp *ops, int from, int to, char **why)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	int			nres0 = c->nres;
	int64		wm0 = c->watermark;
	volatile int at = -1;
	MemoryContext segcxt = AllocSetContextCreate(oldcxt, "softadastra segment", ALLOCSET_DEFAULT_SIZES);
	MemoryContext opcxt = AllocSetContextCreate(segcxt, "softadastra op", ALLOCSET_DEFAULT_SIZES);
	HASHCTL		ctl;
	int			result = -1;

	c->segcxt = segcxt;
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(SaRowEnt);
	ctl.hcxt = segcxt;
	c->rows = hash_create("softadastra rows", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	c->pend = NULL;
	c->npend = c->cappend = 0;
	c->wq = NULL;
	c->nwq = c->capwq = 0;
	for (int i = from; i < to; i++)
	{
		ops[i].prepared = false;
		ops[i].prep_msg = NULL;
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		int64		wm = c->watermark;

		/* 1: prepare the ops this segment applies */
		MemoryContextSwitchTo(segcxt);
		for (at = from; at < to; at++)
		{
			SaOp	   *op = &ops[at];

			if (!op->has_seq || op->seq <= wm)
				continue;
			if (op->seq > wm + 1)
				break;
			wm = op->seq;
			if (op->reject != NULL)
				continue;
			op->prep_msg = sa_prepare_op(c, op);
			op->prepared = true;
		}
		at = -1;

		/* 2: lock their rows, in key order */
		sa_prelock(c, ops, from, to);
		MemoryContextSwitchTo(oldcxt);

		/* 3: apply them, in seq order */
		for (at = from; at < to; at++)
		{
			SaOp	   *op = &ops[at];

			if (!op->has_seq)
			{
				/* refused when parsed, and no seq to order it by */
				sa_record_rejection(c, op, op->reject);
				sa_add_res(c, false, 0, "rejected", 0, op->reject);
				continue;
			}
			if (op->seq <= c->watermark)
			{
				sa_add_res(c, true, op->seq, "duplicate", 0, NULL);
				continue;
			}
			if (op->seq > c->watermark + 1)
			{
				sa_add_res(c, true, op->seq, "gap",
						   0, psprintf("seq " INT64_FORMAT " follows " INT64_FORMAT
									   ": ops " INT64_FORMAT " to " INT64_FORMAT " are missing",
									   op->seq, c->watermark, c->watermark + 1, op->seq - 1));
				c->gap = 1;
				break;
			}
			MemoryContextSwitchTo(opcxt);
			sa_apply_one(c, op);
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(opcxt);
			c->watermark = op->seq;
		}
		at = -1;
		sa_flush_writes(c);
		sa_flush_clocks(c);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		c->nres = nres0;
		c->watermark = wm0;
		c->gap = 0;
		if (sa_is_retryable(edata->sqlerrcode) ||
			(c->in_clock_flush && edata->sqlerrcode == ERRCODE_UNIQUE_VIOLATION))
		{
			result = -2;
			c->last_retry = MemoryContextStrdup(c->cxt, edata->message);
		}
		else if (c->in_flush && sa_is_bad_input(edata->sqlerrcode))
			result = -3;		/* which op? run again writing each at once */
		else if (at < 0 || c->in_flush || !sa_is_bad_input(edata->sqlerrcode))
			ReThrowError(edata);	/* not an op's fault: the call fails */
		else
		{
			*why = edata->detail != NULL
				? psprintf("%s: %s", edata->message, edata->detail)
				: pstrdup(edata->message);
			result = at;
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	c->rows = NULL;
	c->segcxt = NULL;
	c->pend = NULL;
	c->npend = c->cappend = 0;
	c->wq = NULL;
	c->nwq = c->capwq = 0;
	c->in_flush = false;
	c->in_clock_flush = false;
	MemoryContextDelete(segcxt);
	return result;
}

/* ------------------------------------------------------------------------
 * The function
 * ---------------------------------------------------------------------- */

/*
 * softadastra.apply_ops(peer text, epoch bigint, ops jsonb)
 *   RETURNS TABLE (seq bigint, status text, conflict_id bigint, message text)
 */
Datum
softadastra_apply_ops(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *peer = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int64		epoch = PG_GETARG_INT64(1);
	Jsonb	   *ops = PG_GETARG_JSONB_P(2);
	SaCall		c;
	SaOp	   *op;
	int			nops;
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	MemoryContext old;
	Oid			argtypes[3] = {TEXTOID, INT8OID, INT8OID};
	Datum		args[3];
	bool		isnull;
	int64		wm_start;
	int			from;
	int			retries = 0;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("apply_ops must be called where a set is accepted, e.g. SELECT * FROM softadastra.apply_ops(...)")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "apply_ops: return type must be a row type");
	if (epoch < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("epoch must be >= 0, not " INT64_FORMAT, epoch)));
	if (!JB_ROOT_IS_ARRAY(ops) || JB_ROOT_IS_SCALAR(ops))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ops must be a JSON array of ops")));

	memset(&c, 0, sizeof c);
	c.peer = peer;
	c.epoch = epoch;
	c.cxt = CurrentMemoryContext;

	/* the ops, parsed (no table access yet) */
	nops = JsonContainerSize(&ops->root);
	op = palloc0(sizeof(SaOp) * (nops > 0 ? nops : 1));
	for (int i = 0; i < nops; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(&ops->root, i);

		op[i].elem = *e;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* the peer */
	args[0] = CStringGetTextDatum(peer);
	if (sa_exec("SELECT disabled, tables FROM softadastra.peers WHERE name = $1",
				1, argtypes, args, NULL, true, SPI_OK_SELECT) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("peer \"%s\" does not exist", peer)));
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("peer \"%s\" is disabled", peer)));
	{
		Datum		t = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);

		c.all_tables = isnull;
		if (!isnull)
		{
			Datum	   *elems;
			bool	   *enulls;
			int			n;

			old = MemoryContextSwitchTo(c.cxt);
			deconstruct_array(DatumGetArrayTypePCopy(t), REGCLASSOID, 4, true, TYPALIGN_INT,
							  &elems, &enulls, &n);
			c.allowed = palloc(sizeof(Oid) * (n > 0 ? n : 1));
			for (int i = 0; i < n; i++)
				if (!enulls[i])
					c.allowed[c.nallowed++] = DatumGetObjectId(elems[i]);
			MemoryContextSwitchTo(old);
		}
	}

	/* the watermark, locked: batches of one peer and epoch serialize */
	args[1] = Int64GetDatum(epoch);
	sa_exec("INSERT INTO softadastra.peer_progress (peer, epoch) VALUES ($1, $2) "
			"ON CONFLICT DO NOTHING", 2, argtypes, args, NULL, false, SPI_OK_INSERT);
	if (sa_exec("SELECT applied_seq FROM softadastra.peer_progress "
				"WHERE peer = $1 AND epoch = $2 FOR UPDATE",
				2, argtypes, args, NULL, false, SPI_OK_SELECT) != 1)
		elog(ERROR, "peer_progress row of \"%s\" vanished", peer);
	c.watermark = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	wm_start = c.watermark;

	/* parse every op (no table access): refusals are recorded in order */
	for (int i = 0; i < nops; i++)
		op[i].reject = sa_parse_op(&c, &op[i]);

	/*
	 * Segments (see the head of this file): run as many ops as succeed in
	 * one subtransaction; an op whose bad input raised an error is rejected
	 * after the ops before it ran again without it.
	 */
	from = 0;
	while (from < nops && !c.gap)
	{
		char	   *why = NULL;
		int			bad = sa_run_segment(&c, op, from, nops, &why);

		if (bad == -1)
			break;
		if (bad == -3)
		{
			c.no_batch = true;	/* for the rest of the call */
			continue;
		}
		if (bad >= 0 && bad > from)
		{
			char	   *again_msg = NULL;
			int			again = sa_run_segment(&c, op, from, bad, &again_msg);

			if (again == -3)
				c.no_batch = true;
			if (again != -1)
				bad = -2;		/* the world changed: start over */
		}
		if (bad < 0)
		{
			if (++retries > SA_RETRIES)
				ereport(ERROR,
						(errcode(ERRCODE_T_R_DEADLOCK_DETECTED),
						 errmsg("apply_ops gave up after %d attempts to run its ops "
								"against concurrent sessions", SA_RETRIES),
						 errdetail("The last attempt failed with: %s",
								   c.last_retry != NULL ? c.last_retry : "(unknown)"),
						 errhint("Nothing was applied; send the batch again.")));
			/* let the other side finish: a random pause, growing */
			pg_usleep(1000L * (1 + random() % (2L << Min(retries, 7))));
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		if (c.gap)
			break;
		/* every op before bad ran: its seq is the watermark + 1 */
		sa_record_rejection(&c, &op[bad], why);
		sa_add_res(&c, true, op[bad].seq, "rejected", 0, why);
		c.watermark = op[bad].seq;
		from = bad + 1;
	}

	if (c.watermark != wm_start)
	{
		args[2] = Int64GetDatum(c.watermark);
		sa_exec("UPDATE softadastra.peer_progress SET applied_seq = $3, applied_at = now() "
				"WHERE peer = $1 AND epoch = $2", 3, argtypes, args, NULL, false, SPI_OK_UPDATE);
		sa_emit_final(&c, wm_start + 1, c.watermark);
	}
	SPI_finish();

	/* the result rows */
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	tupdesc = CreateTupleDescCopy(tupdesc);
	ts = tuplestore_begin_heap(true, false, work_mem);
	for (int i = 0; i < c.nres; i++)
	{
		Datum		v[4];
		bool		n[4] = {false, false, false, false};

		v[0] = Int64GetDatum(c.res[i].seq);
		n[0] = !c.res[i].has_seq;
		v[1] = CStringGetTextDatum(c.res[i].status);
		v[2] = Int64GetDatum(c.res[i].conflict_id);
		n[2] = c.res[i].conflict_id == 0;
		if (c.res[i].message != NULL)
			v[3] = CStringGetTextDatum(c.res[i].message);
		n[3] = c.res[i].message == NULL;
		tuplestore_putvalues(ts, tupdesc, v, n);
	}
	MemoryContextSwitchTo(old);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = ts;
	rsinfo->setDesc = tupdesc;
	return (Datum) 0;
}
