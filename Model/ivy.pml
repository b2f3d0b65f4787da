/* A Promela model of dsm-ivy (Plugins/dsm-ivy) for spin: 3 nodes, 2 pages, each page managed by
 * node gfn % 3 (the plugin's `manager_chunk: auto` split of 2 pages over 3 nodes).
 *
 * The TRANSITIONS are not written here: Model/generate.py writes table.pml from the text of
 * IvyTable.describe() (the table the plugin runs: next state and ordered actions for every
 * (state, event) pair, and the pairs that are protocol violations). This file is what the table
 * leaves to the engine (Plugins/dsm-ivy/Core/Node.swift), modelled step by step:
 *   - the actions (inline A_<action>, one per CacheAction/ManagerAction, same names);
 *   - classification of faults and messages into events (Store_Sharers, FwdGetX_Sharers,
 *     LastInvAck, Data_S/Data_X), the reclassification of Grant into Grant_CopyLost;
 *   - the manager's queue and serve-next, the local queue of messages a node sends itself,
 *     z_stall and the replay of stalled inputs when the page's state changes;
 *   - the transport: per (sender, receiver, lane) FIFO channels, urgent and bulk lanes as the
 *     plugin picks them (page data bulk; Inv of the owner's own upgrade bulk; the rest urgent);
 *     any interleaving of deliveries across channels and nodes.
 * The host side: each node's page state (none/shared/modified) and the value of its copy; threads
 * that fault (read on none, write on none/shared; at most FAULTS per node) and write when the page
 * is modified (at most WRITES per page; a write makes the value latest[p] + 1).
 *
 * Checked after every step (check_all): single writer / multiple readers per page; every copy a
 * thread may read holds the latest write (no lost write); at most one owner per page; the host
 * page state is the access the table's state grants; no table error, no failed `require` of an
 * action. When nothing can move (timeout): nothing is outstanding, queued, stalled or stashed,
 * every page is in a stable state with one owner, and the manager knows that owner (no deadlock).
 *
 * Abstracted away: hops, latency statistics, the hold window (a delay of forwards/invalidations;
 * delays are covered by the interleavings) and pins (a refused pinnable action defers the whole
 * transition with no side effect).
 */

#define N 3
#define P 2
#ifndef FAULTS
#define FAULTS 2
#endif
#ifndef REPLICATED
#define REPLICATED 0   /* 1: every page starts as a read copy on every node (GVM_HINT_REPLICATED) */
#endif
#ifndef WRITES
#define WRITES 2
#endif
#define CAP 4
#define MAXREF 3
#define I(n, p) ((n) * P + (p))
#define C(s, d, lane) (((s) * N + (d)) * 2 + (lane))
#define MGR(p) ((p) % N)
#define URG 0
#define BULK 1
#define READ 0
#define WRITE 1
#define NONE 255
#define FAULTK 0
#define MSGK 1
#define WRITEK 2
#define DONE 3

/* wire message types (Plugins/dsm-ivy/Core/Wire.swift) */
#define M_GetS 1
#define M_GetX 2
#define M_FwdGetS 3
#define M_FwdGetX 4
#define M_Inv 5
#define M_InvAck 6
#define M_Data 7
#define M_Grant 8
#define M_Confirm 9
#define M_Nack 10
#define M_Fetch 11
#define M_Release 12

#include "table.pml"

/* ---- host and cache-controller state, per (node, page) */
byte cst[N * P];      /* cache state */
byte hst[N * P];      /* host page state: 0 none, 1 shared, 2 modified */
byte val[N * P];      /* value of the node's copy (meaningful when hst > 0) */
byte cset[N * P];     /* owner: copyset bits */
bit outst[N * P];     /* requester: a fault is outstanding */
bit otOpen[N * P];    /* owner: invalidation round (OM_A / OI_A) */
byte otReq[N * P]; byte otTxn[N * P]; bit otHC[N * P]; byte otAcks[N * P]; byte otVal[N * P];
bit stU[N * P * 2]; byte stT[N * P * 2]; byte stV[N * P * 2];   /* stashed bytes, 2 slots */
chan stq[N * P] = [4] of { bit, byte, byte, byte, byte, bit, bit, byte };  /* stalled inputs */
chan replayq[N] = [8] of { byte };
chan lq[N] = [6] of { byte, byte, byte, byte, bit, bit, byte };           /* to itself */

/* ---- managers (page p is managed by node MGR(p)) */
byte owner[P]; bit mOpen[P]; byte mTxnO[P]; byte mReq[P]; bit mExO[P]; bit mHCO[P]; byte mRef[P];
chan mq[P] = [N] of { byte, byte, byte, bit };
byte nextTxn[N];

/* ---- the network: {type, gfn, node, txn, holdsCopy, exclusive, value} */
chan net[N * N * 2] = [CAP] of { byte, byte, byte, byte, bit, bit, byte };

/* ---- the workload */
byte latest[P];
byte writesLeft[P];
byte faultsLeft[N];

inline send_msg(t, dst, lane, nd, tx, h, e, v) {
    if
    :: (dst) == n -> assert(nfull(lq[n])); lq[n] ! t, p, nd, tx, h, e, v
    :: else -> assert(nfull(net[C(n, dst, lane)])); net[C(n, dst, lane)] ! t, p, nd, tx, h, e, v
    fi
}

inline send_data(dst, e, v, tx) {
    assert((dst) != n);   /* page data is never sent to this node itself */
    send_msg(M_Data, dst, BULK, n, tx, 0, e, v)
}

/* A `require` of an action failed: the plugin calls fatal; here it is a violation. */
#define violation(why) printf("VIOLATION node %d gfn %d: ", n, p); printf(why); printf("\n"); assert(false)

/* ---- cache-controller actions (CacheAction) */
inline A_p_dropCopy() { hst[I(n, p)] = 0 }
inline A_p_dropToBuffer() {
    if :: hst[I(n, p)] == 0 -> violation("drop: the owner has no copy") :: else -> skip fi;
    cBuf = val[I(n, p)]; hst[I(n, p)] = 0
}
inline A_p_downgradeToBuffer() {
    if :: hst[I(n, p)] == 0 -> violation("downgrade: no copy") :: else -> skip fi;
    cBuf = val[I(n, p)]; hst[I(n, p)] = 1
}
inline A_p_readToBuffer() {
    if :: hst[I(n, p)] == 0 -> violation("read: no copy") :: else -> skip fi;
    cBuf = val[I(n, p)]
}
inline A_p_zeroBuffer() {
    if :: latest[p] != 0 -> violation("a page served as never written was written") :: else -> skip fi;
    cBuf = 0
}
inline A_p_installZeroModified() { hst[I(n, p)] = 2; val[I(n, p)] = 0 }
inline A_p_installZeroShared() { hst[I(n, p)] = 1; val[I(n, p)] = 0; cBuf = 0 }
inline A_p_installData() {
    if :: mEx -> hst[I(n, p)] = 2 :: else -> hst[I(n, p)] = 1 fi;
    val[I(n, p)] = mV; cTxn = mTxn
}
inline A_p_upgrade() {
    if
    :: hst[I(n, p)] == 0 -> reclass = E_Grant_CopyLost; abort = 1   /* page_upgrade: NOT_PRESENT */
    :: else -> hst[I(n, p)] = 2; cTxn = mTxn
    fi
}
inline A_p_upgradeOwn() {
    if :: hst[I(n, p)] == 0 -> violation("upgrade of the owner's copy: not present") :: else -> skip fi;
    hst[I(n, p)] = 2
}
inline A_r_startReadMiss() { outst[I(n, p)] = 1 }
inline A_r_startWriteMiss() { outst[I(n, p)] = 1 }
inline A_r_startUpgrade() { outst[I(n, p)] = 1 }
inline A_r_sendGetS() { send_msg(M_GetS, MGR(p), URG, n, 0, 0, 0, 0) }
inline A_r_sendGetX() {
    if :: cst[I(n, p)] == S_S -> h = 1 :: else -> h = 0 fi;
    send_msg(M_GetX, MGR(p), URG, n, 0, h, 0, 0)
}
inline A_r_coalesce() { skip }
inline A_r_complete() {
    if :: !outst[I(n, p)] -> violation("no outstanding fault to complete") :: else -> skip fi;
    outst[I(n, p)] = 0
}
inline A_r_sendConfirm() {
    if :: evt == E_Data_S -> e = 0 :: else -> e = 1 fi;
    send_msg(M_Confirm, MGR(p), URG, n, mTxn, 0, e, 0)
}
inline A_r_sendRelease() { send_msg(M_Release, mNode, URG, n, mTxn, 0, 0, 0) }
inline A_r_sendFetch() { send_msg(M_Fetch, mNode, URG, n, mTxn, 0, 0, 0) }
inline A_r_lostCopy() { skip }
inline A_o_addSharer() {
    if :: mNode == n -> violation("the owner cannot share with itself") :: else -> skip fi;
    cset[I(n, p)] = cset[I(n, p)] | (1 << mNode)
}
inline A_o_sendDataS() { send_data(mNode, 0, cBuf, mTxn) }
inline A_o_invalidateOthers() {
    if
    :: hasMsg -> req = mNode; otTxn[I(n, p)] = mTxn; otHC[I(n, p)] = (mHC && (cset[I(n, p)] & (1 << mNode)) != 0);
                 otVal[I(n, p)] = cBuf; lane = URG
    :: else -> req = n; otTxn[I(n, p)] = 0; otHC[I(n, p)] = 0; otVal[I(n, p)] = 0; lane = BULK
    fi;
    otReq[I(n, p)] = req;
    tg = cset[I(n, p)] & ~(1 << req);
    if :: tg == 0 -> violation("no sharer to invalidate") :: else -> skip fi;
    if :: otOpen[I(n, p)] -> violation("a second invalidation round on one page") :: else -> skip fi;
    otAcks[I(n, p)] = 0;
    for (j : 0 .. N - 1) {
        if
        :: (tg & (1 << j)) != 0 -> send_msg(M_Inv, j, lane, n, otTxn[I(n, p)], 0, 0, 0); otAcks[I(n, p)]++
        :: else -> skip
        fi
    }
    cset[I(n, p)] = cset[I(n, p)] & ~tg;
    otOpen[I(n, p)] = 1
}
inline A_o_countAck() {
    if :: !otOpen[I(n, p)] -> violation("no invalidation round open") :: else -> skip fi;
    if :: otTxn[I(n, p)] != mTxn -> violation("ack for another transaction") :: else -> skip fi;
    otAcks[I(n, p)]--;
    if
    :: otAcks[I(n, p)] == 0 ->
        otOpen[I(n, p)] = 0; cReq = otReq[I(n, p)]; cTxn = otTxn[I(n, p)]; cHC = otHC[I(n, p)]; cBuf = otVal[I(n, p)]
    :: else -> skip
    fi
}
inline A_o_handOver() {
    if
    :: evt == E_FwdGetX && hasMsg -> cReq = mNode; cTxn = mTxn; cHC = (mHC && (cset[I(n, p)] & (1 << mNode)) != 0)
    :: else -> skip
    fi;
    cset[I(n, p)] = 0;
    if
    :: cHC ->
        if
        :: !stU[I(n, p) * 2] -> stU[I(n, p) * 2] = 1; stT[I(n, p) * 2] = cTxn; stV[I(n, p) * 2] = cBuf
        :: stU[I(n, p) * 2] && !stU[I(n, p) * 2 + 1] -> stU[I(n, p) * 2 + 1] = 1; stT[I(n, p) * 2 + 1] = cTxn; stV[I(n, p) * 2 + 1] = cBuf
        :: else -> violation("model bound: more than 2 stashed pages")
        fi;
        send_msg(M_Grant, cReq, URG, n, cTxn, 0, 0, 0)
    :: else -> send_data(cReq, 1, cBuf, cTxn)
    fi
}
inline stash_take() {   /* the stash of (p, mTxn) into cBuf; found = 0 if none */
    found = 0;
    for (j : 0 .. 1) {
        if
        :: !found && stU[I(n, p) * 2 + j] && stT[I(n, p) * 2 + j] == mTxn ->
            found = 1; cBuf = stV[I(n, p) * 2 + j]; stU[I(n, p) * 2 + j] = 0
        :: else -> skip
        fi
    }
}
inline A_o_sendStash() {
    stash_take();
    if :: !found -> violation("Fetch: no bytes kept for that transaction") :: else -> skip fi;
    send_data(mNode, 1, cBuf, mTxn)
}
inline A_o_freeStash() {
    stash_take();
    if :: !found -> violation("Release: no bytes kept for that transaction") :: else -> skip fi
}
inline A_s_sendInvAck() { send_msg(M_InvAck, mNode, URG, n, mTxn, 0, 0, 0) }
inline A_w_wakeStale() { skip }
inline A_z_stall() {
    assert(nfull(stq[I(n, p)]));
    if
    :: hasMsg -> stq[I(n, p)] ! 1, mT, mSrc, mNode, mTxn, mHC, mEx, mV
    :: else -> stq[I(n, p)] ! 0, acc, n, 0, 0, 0, 0, 0
    fi
}
inline A_f_nack() { send_msg(M_Nack, MGR(p), URG, n, mTxn, 0, 0, 0) }

/* ---- manager actions (ManagerAction) */
inline forward() {
    if :: mExO[p] -> t = M_FwdGetX :: else -> t = M_FwdGetS fi;
    send_msg(t, owner[p], URG, mReq[p], mTxnO[p], mHCO[p], 0, 0)
}
inline A_m_beginTxn() {
    if :: mOpen[p] -> violation("a transaction is already open") :: else -> skip fi;
    mOpen[p] = 1; mTxnO[p] = nextTxn[n]; nextTxn[n]++; mReq[p] = mNode; mExO[p] = (mT == M_GetX); mHCO[p] = mHC; mRef[p] = 0
}
inline A_m_forward() {
    if :: owner[p] == mReq[p] -> violation("a node requests a page it owns") :: else -> skip fi;
    forward()
}
inline A_m_queue() { assert(nfull(mq[p])); mq[p] ! mT, mNode, mTxn, mHC }
inline A_m_checkConfirm() {
    if
    :: mNode != mReq[p] || mTxn != mTxnO[p] || mEx != mExO[p] -> violation("confirm does not match the open transaction")
    :: else -> skip
    fi
}
inline A_m_recordOwner() {
    mOpen[p] = 0;
    if :: mExO[p] -> owner[p] = mReq[p] :: else -> skip fi;
    serveNext = 1
}
inline A_m_serveNext() { serveNext = 1 }
inline A_m_reforward() {
    if :: mTxn != mTxnO[p] -> violation("refusal for another transaction") :: else -> skip fi;
    mRef[p]++;
    if :: mRef[p] > MAXREF -> violation("forward refused again and again: manager and owner disagree") :: else -> skip fi;
    forward()
}

/* ---- the engine (Node.swift: run, handleFault, handleMessage, runManager, drain) */
inline run_cache() {
    reclass = NONE;
    do
    :: true ->
        abort = 0; from = cst[I(n, p)];
        cache_table();
        if
        :: reclass != NONE -> evt = reclass; reclass = NONE
        :: else ->
            if
            :: !abort ->
                cst[I(n, p)] = nx;
                if :: nx != from && len(stq[I(n, p)]) > 0 -> assert(nfull(replayq[n])); replayq[n] ! p :: else -> skip fi
            :: else -> skip
            fi;
            break
        fi
    od
}

inline run_manager() {
    if :: MGR(p) != n -> violation("a manager message reached a node that does not manage the page") :: else -> skip fi;
    do
    :: true ->
        serveNext = 0; abort = 0;
        if :: mOpen[p] -> mstate = MS_Busy_C :: else -> mstate = MS_Idle fi;
        manager_table();
        if
        :: serveNext && len(mq[p]) > 0 ->
            mq[p] ? mT, mNode, mTxn, mHC; mSrc = mNode; mEx = 0;
            if :: mT == M_GetS -> mevt = ME_GetS :: else -> mevt = ME_GetX fi
        :: else -> break
        fi
    od
}

/* One input (handleFault / handleMessage): classify it into an event and run the table. */
inline process() {
    toCache = 1;
    if
    :: kind == FAULTK ->
        hasMsg = 0; cReq = n;
        if
        :: acc == READ -> evt = E_Load
        :: else -> if :: cst[I(n, p)] == S_OS && cset[I(n, p)] != 0 -> evt = E_Store_Sharers :: else -> evt = E_Store fi
        fi
    :: else ->
        hasMsg = 1;
        if
        :: mT == M_GetS -> mevt = ME_GetS; toCache = 0
        :: mT == M_GetX -> mevt = ME_GetX; toCache = 0
        :: mT == M_Confirm -> mevt = ME_Confirm; toCache = 0
        :: mT == M_Nack -> mevt = ME_Nack; toCache = 0
        :: mT == M_FwdGetS -> evt = E_FwdGetS
        :: mT == M_FwdGetX ->
            if
            :: cst[I(n, p)] == S_OS && (cset[I(n, p)] & ~(1 << mNode)) != 0 -> evt = E_FwdGetX_Sharers
            :: else -> evt = E_FwdGetX
            fi
        :: mT == M_Inv -> evt = E_Inv
        :: mT == M_InvAck -> if :: otOpen[I(n, p)] && otAcks[I(n, p)] == 1 -> evt = E_LastInvAck :: else -> evt = E_InvAck fi
        :: mT == M_Data -> if :: mEx -> evt = E_Data_X :: else -> evt = E_Data_S fi
        :: mT == M_Grant -> evt = E_Grant
        :: mT == M_Fetch -> evt = E_Fetch
        :: mT == M_Release -> evt = E_Release
        :: else -> violation("unknown message type")
        fi
    fi;
    if :: toCache -> run_cache() :: else -> run_manager() fi
}

/* The input, then (drain) the messages this node sent itself and the replays of stalled inputs,
   until none is left: a local message first; a replay batch (every input stalled on one page
   when its state changed) runs to its end before the local queue is looked at again. */
inline engine() {
    k = 0;
    do
    :: true ->
        process();
        do
        :: k > 0 ->
            k--; p = rp;
            stq[I(n, rp)] ? sKind, mT, mSrc, mNode, mTxn, mHC, mEx, mV;
            if :: sKind == 0 -> kind = FAULTK; acc = mT :: else -> kind = MSGK fi;
            break
        :: k == 0 && len(lq[n]) > 0 -> lq[n] ? mT, p, mNode, mTxn, mHC, mEx, mV; mSrc = n; kind = MSGK; break
        :: k == 0 && len(lq[n]) == 0 && len(replayq[n]) > 0 -> replayq[n] ? rp; k = len(stq[I(n, rp)])
        :: k == 0 && len(lq[n]) == 0 && len(replayq[n]) == 0 -> kind = DONE; break
        od;
        if :: kind == DONE -> break :: else -> skip fi
    od
}

inline check_all() {
    for (j : 0 .. N * P - 1) {
        check_permission(j);
        assert(hst[j] == 0 || val[j] == latest[j % P])   /* no lost write: every readable copy is current */
    }
    for (q : 0 .. P - 1) {
        writers = 0; readers = 0; owners = 0;
        for (j : 0 .. N - 1) {
            if :: hst[I(j, q)] == 2 -> writers++ :: hst[I(j, q)] == 1 -> readers++ :: else -> skip fi;
            if
            :: cst[I(j, q)] == S_OZ || cst[I(j, q)] == S_OS || cst[I(j, q)] == S_OM || cst[I(j, q)] == S_OM_A || cst[I(j, q)] == S_OI_A -> owners++
            :: else -> skip
            fi
        }
        assert(writers <= 1 && (writers == 0 || readers == 0));   /* single writer, or readers only */
        assert(owners <= 1)
    }
}

proctype Node(byte n) {
    byte p, rp, evt, nx, from, mevt, mstate, k, j, q, tg, req, t, acc, reclass, kind;
    byte mT, mNode, mTxn, mV, mSrc, cReq, cTxn, cBuf, writers, readers, owners;
    bit abort, hasMsg, serveNext, mHC, mEx, cHC, h, e, lane, found, sKind, toCache;
end:
    do
    :: atomic {
        if
        /* a thread faults: read on an invalid page, write on an invalid or shared one */
        :: faultsLeft[n] > 0 && hst[I(n, 0)] == 0 -> faultsLeft[n]--; p = 0; acc = READ; kind = FAULTK
        :: faultsLeft[n] > 0 && hst[I(n, 1)] == 0 -> faultsLeft[n]--; p = 1; acc = READ; kind = FAULTK
        :: faultsLeft[n] > 0 && hst[I(n, 0)] < 2 -> faultsLeft[n]--; p = 0; acc = WRITE; kind = FAULTK
        :: faultsLeft[n] > 0 && hst[I(n, 1)] < 2 -> faultsLeft[n]--; p = 1; acc = WRITE; kind = FAULTK
        /* a thread writes a page it holds modified */
        :: hst[I(n, 0)] == 2 && writesLeft[0] > 0 -> writesLeft[0]--; latest[0]++; val[I(n, 0)] = latest[0]; kind = WRITEK
        :: hst[I(n, 1)] == 2 && writesLeft[1] > 0 -> writesLeft[1]--; latest[1]++; val[I(n, 1)] = latest[1]; kind = WRITEK
        /* a message arrives: from either peer, on either lane (FIFO per sender, receiver, lane) */
        :: len(net[C((n + 1) % N, n, URG)]) > 0 -> net[C((n + 1) % N, n, URG)] ? mT, p, mNode, mTxn, mHC, mEx, mV; mSrc = (n + 1) % N; kind = MSGK
        :: len(net[C((n + 1) % N, n, BULK)]) > 0 -> net[C((n + 1) % N, n, BULK)] ? mT, p, mNode, mTxn, mHC, mEx, mV; mSrc = (n + 1) % N; kind = MSGK
        :: len(net[C((n + 2) % N, n, URG)]) > 0 -> net[C((n + 2) % N, n, URG)] ? mT, p, mNode, mTxn, mHC, mEx, mV; mSrc = (n + 2) % N; kind = MSGK
        :: len(net[C((n + 2) % N, n, BULK)]) > 0 -> net[C((n + 2) % N, n, BULK)] ? mT, p, mNode, mTxn, mHC, mEx, mV; mSrc = (n + 2) % N; kind = MSGK
        fi;
        if :: kind != WRITEK -> engine() :: else -> skip fi;
        check_all();
        /* scratch variables carry nothing between steps: clear them so they do not split states */
        p = 0; rp = 0; evt = 0; nx = 0; from = 0; mevt = 0; mstate = 0; k = 0; j = 0; q = 0; tg = 0; req = 0; t = 0;
        acc = 0; reclass = 0; kind = 0; mT = 0; mNode = 0; mTxn = 0; mV = 0; mSrc = 0; cReq = 0; cTxn = 0; cBuf = 0;
        writers = 0; readers = 0; owners = 0; abort = 0; hasMsg = 0; serveNext = 0; mHC = 0; mEx = 0; cHC = 0;
        h = 0; e = 0; lane = 0; found = 0; sKind = 0; toCache = 0
       }
    od
}

/* When nothing can move any more, the system must be at rest (no deadlock, nothing left over). */
proctype Quiescence() {
    byte i, q, owners, who;
    timeout ->
    atomic {
        for (i : 0 .. N * N * 2 - 1) { assert(empty(net[i])) }
        for (i : 0 .. N - 1) { assert(empty(lq[i]) && empty(replayq[i])) }
        for (i : 0 .. N * P - 1) {
            assert(!outst[i] && !otOpen[i] && empty(stq[i]));   /* no request left hanging */
            assert(cst[i] == S_I || cst[i] == S_S || cst[i] == S_OZ || cst[i] == S_OS || cst[i] == S_OM)
        }
        for (i : 0 .. N * P * 2 - 1) { assert(!stU[i]) }           /* every stash fetched or released */
        for (q : 0 .. P - 1) {
            assert(!mOpen[q] && empty(mq[q]));
            owners = 0;
            for (i : 0 .. N - 1) {
                if
                :: cst[I(i, q)] == S_OZ || cst[I(i, q)] == S_OS || cst[I(i, q)] == S_OM -> owners++; who = i
                :: else -> skip
                fi
            }
            assert(owners == 1 && owner[q] == who)                 /* the manager knows the owner */
        }
    }
}

init {
    byte i, q;
    atomic {
        for (i : 0 .. N - 1) {
            faultsLeft[i] = FAULTS; nextTxn[i] = 1;
            for (q : 0 .. P - 1) {
                if
                :: REPLICATED && MGR(q) == i ->   /* the manager owns a read copy, every other node shares it */
                    cst[I(i, q)] = S_OS; hst[I(i, q)] = 1; cset[I(i, q)] = ((1 << N) - 1) & ~(1 << i)
                :: REPLICATED && MGR(q) != i -> cst[I(i, q)] = S_S; hst[I(i, q)] = 1
                :: !REPLICATED && MGR(q) == i -> cst[I(i, q)] = S_OZ
                :: else -> cst[I(i, q)] = S_I
                fi
            }
        }
        for (q : 0 .. P - 1) { owner[q] = MGR(q); writesLeft[q] = WRITES }
        run Node(0); run Node(1); run Node(2); run Quiescence()
    }
}
