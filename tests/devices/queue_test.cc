// Queue: configuration checks, Pop / AddUsed through the rings, notification suppression, Reset.
#include "devices/virtio/queue.h"

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "devices/virtio/virtio_ring.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/fake_driver.h"

namespace vessel::virtio {
namespace {

using testing::Buf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using testing::FakeDriver;
using ::testing::HasSubstr;
using testing::Msg;

TEST(QueueTest, OneDescriptorRoundTrip) {
  FakeDriver d(8);
  std::vector<Descriptor> expected = d.WriteChain(3, {{64, true}});
  d.Publish(3);

  std::optional<DescriptorChain> chain = d.PopChain();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head_index(), 3);
  absl::StatusOr<std::vector<Descriptor>> all = chain->Collect();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(*all, ElementsAreArray(expected));
  EXPECT_EQ(d.queue().next_avail(), 1);

  // Nothing more available.
  absl::StatusOr<std::optional<DescriptorChain>> none = d.queue().Pop(d.mem());
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  EXPECT_EQ(d.UsedIdx(), 0);
  ASSERT_TRUE(d.queue().AddUsed(d.mem(), chain->head_index(), 0x33).ok());
  EXPECT_EQ(d.UsedIdx(), 1);
  vring_used_elem e = d.UsedElem(0);
  EXPECT_EQ(e.id, 3u);
  EXPECT_EQ(e.len, 0x33u);
  EXPECT_EQ(d.queue().next_used(), 1);
}

TEST(QueueTest, FourDescriptorRoundTrip) {
  FakeDriver d(16);
  std::vector<Descriptor> a = d.WriteChain(0, {{16, false}, {100, false}, {200, true}, {1, true}});
  std::vector<Descriptor> b = d.WriteChain(4, {{8, false}, {8, false}, {8, false}, {8, false}});
  d.Publish(4);
  d.Publish(0);

  std::optional<DescriptorChain> first = d.PopChain();
  std::optional<DescriptorChain> second = d.PopChain();
  ASSERT_TRUE(first.has_value() && second.has_value());
  EXPECT_EQ(first->head_index(), 4);
  EXPECT_EQ(second->head_index(), 0);
  EXPECT_THAT(*first->Collect(), ElementsAreArray(b));
  EXPECT_THAT(*second->Collect(), ElementsAreArray(a));
  EXPECT_EQ(*second->ReadableBytes(), 116u);
  EXPECT_EQ(*second->WritableBytes(), 201u);

  // Completed out of order.
  ASSERT_TRUE(d.queue().AddUsed(d.mem(), 0, 201).ok());
  ASSERT_TRUE(d.queue().AddUsed(d.mem(), 4, 0).ok());
  EXPECT_EQ(d.UsedIdx(), 2);
  EXPECT_EQ(d.UsedElem(0).id, 0u);
  EXPECT_EQ(d.UsedElem(0).len, 201u);
  EXPECT_EQ(d.UsedElem(1).id, 4u);
  EXPECT_EQ(d.UsedElem(1).len, 0u);
}

TEST(QueueTest, IndirectChainRoundTrip) {
  FakeDriver d(8);
  std::vector<Descriptor> expected = d.WriteIndirectChain(5, {{12, false}, {34, true}});
  d.Publish(5);
  std::optional<DescriptorChain> chain = d.PopChain();
  ASSERT_TRUE(chain.has_value());
  EXPECT_EQ(chain->head_index(), 5);
  EXPECT_THAT(*chain->Collect(), ElementsAreArray(expected));
  ASSERT_TRUE(d.queue().AddUsed(d.mem(), 5, 34).ok());
  EXPECT_EQ(d.UsedIdx(), 1);
  EXPECT_EQ(d.UsedElem(0).id, 5u);
  EXPECT_EQ(d.UsedElem(0).len, 34u);
}

TEST(QueueTest, RingsWrapAroundAndIndicesWrapAt16Bits) {
  FakeDriver d(4);
  d.WriteChain(0, {{8, true}});
  d.WriteChain(1, {{8, true}});
  // 70000 rounds: ring slots wrap every 4, the 16-bit indices wrap past 65535.
  for (uint32_t i = 0; i < 70000; ++i) {
    const uint16_t head = static_cast<uint16_t>(i % 2);
    d.Publish(head);
    std::optional<DescriptorChain> chain = d.PopChain();
    ASSERT_TRUE(chain.has_value()) << "round " << i;
    ASSERT_EQ(chain->head_index(), head) << "round " << i;
    ASSERT_TRUE(d.queue().AddUsed(d.mem(), head, i).ok());
    const uint16_t idx = static_cast<uint16_t>(i + 1);
    ASSERT_EQ(d.UsedIdx(), idx);
    ASSERT_EQ(d.UsedElem(static_cast<uint16_t>(i % 4)).len, i);
  }
  EXPECT_EQ(d.queue().next_avail(), static_cast<uint16_t>(70000));
}

TEST(QueueTest, FullRingOfPendingChains) {
  FakeDriver d(4);
  for (uint16_t i = 0; i < 4; ++i) {
    d.WriteChain(i, {{8, false}});
    d.Publish(static_cast<uint16_t>(3 - i));
  }
  absl::StatusOr<uint16_t> pending = d.queue().Pending(d.mem());
  ASSERT_TRUE(pending.ok()) << pending.status();
  EXPECT_EQ(*pending, 4);  // exactly a queue size ahead is allowed
  for (uint16_t i = 0; i < 4; ++i) {
    std::optional<DescriptorChain> chain = d.PopChain();
    ASSERT_TRUE(chain.has_value());
    EXPECT_EQ(chain->head_index(), 3 - i);
  }
  EXPECT_EQ(*d.queue().Pending(d.mem()), 0);
}

TEST(QueueTest, HeadIndexOutOfRangeRejected) {
  FakeDriver d(8);
  d.Publish(8);
  absl::StatusOr<std::optional<DescriptorChain>> c = d.queue().Pop(d.mem());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(c.status()), HasSubstr("head index 8, out of range"));
  EXPECT_EQ(d.queue().next_avail(), 0);
  // AddUsed refuses an out-of-range head too.
  absl::Status s = d.queue().AddUsed(d.mem(), 8, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(d.UsedIdx(), 0);
}

TEST(QueueTest, AvailIdxTooFarAheadRejected) {
  FakeDriver d(8);
  d.SetAvailIdx(9);
  absl::StatusOr<std::optional<DescriptorChain>> c = d.queue().Pop(d.mem());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(c.status()), HasSubstr("9 entries ahead"));
  // "Behind" the device is the same as far ahead (16-bit distance).
  d.SetAvailIdx(0xffff);
  EXPECT_FALSE(d.queue().Pop(d.mem()).ok());
  d.SetAvailIdx(8);
  EXPECT_TRUE(d.queue().Pop(d.mem()).ok());
}

TEST(QueueTest, NotReadyQueueRefusesPop) {
  FakeDriver d(8);
  d.WriteChain(0, {{8, false}});
  d.Publish(0);
  d.queue().SetReady(false);
  absl::StatusOr<std::optional<DescriptorChain>> c = d.queue().Pop(d.mem());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(d.queue().AddUsed(d.mem(), 0, 0).code(), absl::StatusCode::kFailedPrecondition);
  d.queue().SetReady(true);
  EXPECT_TRUE(d.PopChain().has_value());
}

TEST(QueueTest, MaxSizeMustBePowerOfTwoUpTo32768) {
  EXPECT_FALSE(Queue::Create(0).ok());
  EXPECT_FALSE(Queue::Create(3).ok());
  EXPECT_FALSE(Queue::Create(384).ok());
  EXPECT_FALSE(Queue::Create(65535).ok());
  absl::StatusOr<Queue> q = Queue::Create(32768);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->max_size(), 32768);
  EXPECT_EQ(q->size(), 32768);
  EXPECT_TRUE(Queue::Create(1).ok());
}

TEST(QueueTest, SizeSetterRejectsZeroNonPowerOfTwoAndAboveMax) {
  absl::StatusOr<Queue> q = Queue::Create(256);
  ASSERT_TRUE(q.ok());
  for (uint16_t bad : {uint16_t{0}, uint16_t{3}, uint16_t{100}, uint16_t{255}, uint16_t{512}}) {
    absl::Status s = q->SetSize(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "size " << bad;
    EXPECT_EQ(q->size(), 256) << "size " << bad;
  }
  EXPECT_TRUE(q->SetSize(1).ok());
  EXPECT_EQ(q->size(), 1);
  EXPECT_TRUE(q->SetSize(128).ok());
  EXPECT_EQ(q->size(), 128);
}

TEST(QueueTest, ValidateAcceptsWellFormedLayout) {
  FakeDriver d(256);
  absl::Status s = d.queue().Validate(d.mem());
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(d.queue().IsValid(d.mem()));
}

TEST(QueueTest, MisalignedRingsRejected) {
  FakeDriver d(8);
  d.queue().SetDescTable(FakeDriver::kDescTable + 8);
  EXPECT_FALSE(d.queue().IsValid(d.mem()));
  EXPECT_THAT(Msg(d.queue().Validate(d.mem())), HasSubstr("descriptor table"));
  d.queue().SetDescTable(FakeDriver::kDescTable + 16);
  EXPECT_TRUE(d.queue().IsValid(d.mem()));

  d.queue().SetAvailRing(FakeDriver::kAvailRing + 1);
  EXPECT_THAT(Msg(d.queue().Validate(d.mem())), HasSubstr("avail ring"));
  d.queue().SetAvailRing(FakeDriver::kAvailRing + 2);
  EXPECT_TRUE(d.queue().IsValid(d.mem()));

  d.queue().SetUsedRing(FakeDriver::kUsedRing + 2);
  EXPECT_THAT(Msg(d.queue().Validate(d.mem())), HasSubstr("used ring"));
  EXPECT_THAT(Msg(d.queue().Validate(d.mem())), HasSubstr("4-byte aligned"));
  d.queue().SetUsedRing(FakeDriver::kUsedRing + 4);
  EXPECT_TRUE(d.queue().IsValid(d.mem()));
}

TEST(QueueTest, RingsOutsideRamRejected) {
  FakeDriver d(8);
  const uint64_t end = FakeDriver::kMemSize;
  // Each ring ending exactly at the end of RAM is fine; one byte more is not.
  d.queue().SetDescTable(end - Queue::DescTableBytes(8));
  EXPECT_TRUE(d.queue().IsValid(d.mem()));
  d.queue().SetDescTable(end - Queue::DescTableBytes(8) + 16);
  EXPECT_THAT(Msg(d.queue().Validate(d.mem())), HasSubstr("not wholly in guest RAM"));
  d.queue().SetDescTable(FakeDriver::kDescTable);

  EXPECT_EQ(Queue::AvailRingBytes(8), 22u);
  d.queue().SetAvailRing(end - 22);
  EXPECT_TRUE(d.queue().IsValid(d.mem()));
  d.queue().SetAvailRing(end - 20);  // used_event would be past the end
  EXPECT_FALSE(d.queue().IsValid(d.mem()));
  d.queue().SetAvailRing(FakeDriver::kAvailRing);

  EXPECT_EQ(Queue::UsedRingBytes(8), 70u);
  d.queue().SetUsedRing(0xfffffffffffffff0ull);  // wraps
  EXPECT_FALSE(d.queue().IsValid(d.mem()));
  d.queue().SetUsedRing(end - 68);  // avail_event would be past the end
  EXPECT_FALSE(d.queue().IsValid(d.mem()));
  d.queue().SetUsedRing(end - 72);
  EXPECT_TRUE(d.queue().IsValid(d.mem()));
}

TEST(QueueTest, EventIdxNeedsNotificationAroundUsedEvent) {
  FakeDriver d(8);
  d.queue().SetEventIdx(true);
  d.WriteChain(0, {{8, true}});
  d.SetAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);  // ignored with event idx
  d.SetUsedEvent(2);  // interrupt me once used entry 2 is added (used idx goes 2 -> 3)
  std::vector<bool> needs;
  for (int i = 0; i < 4; ++i) {
    d.Publish(0);
    ASSERT_TRUE(d.PopChain().has_value());
    ASSERT_TRUE(d.queue().AddUsed(d.mem(), 0, 8).ok());
    absl::StatusOr<bool> n = d.queue().NeedsNotification(d.mem());
    ASSERT_TRUE(n.ok()) << n.status();
    needs.push_back(*n);
  }
  EXPECT_THAT(needs, ElementsAre(false, false, true, false));

  // A batch of entries that crosses used_event needs one notification; nothing new needs none.
  d.SetUsedEvent(5);
  for (int i = 0; i < 3; ++i) {
    d.Publish(0);
    ASSERT_TRUE(d.PopChain().has_value());
    ASSERT_TRUE(d.queue().AddUsed(d.mem(), 0, 8).ok());
  }
  EXPECT_TRUE(*d.queue().NeedsNotification(d.mem()));
  EXPECT_FALSE(*d.queue().NeedsNotification(d.mem()));
  // used_event behind the batch: no notification.
  d.SetUsedEvent(1);
  d.Publish(0);
  ASSERT_TRUE(d.PopChain().has_value());
  ASSERT_TRUE(d.queue().AddUsed(d.mem(), 0, 8).ok());
  EXPECT_FALSE(*d.queue().NeedsNotification(d.mem()));
}

TEST(QueueTest, NoInterruptFlagWithoutEventIdx) {
  FakeDriver d(8);
  d.WriteChain(0, {{8, true}});
  d.SetUsedEvent(100);  // ignored without event idx
  d.Publish(0);
  ASSERT_TRUE(d.PopChain().has_value());
  ASSERT_TRUE(d.queue().AddUsed(d.mem(), 0, 8).ok());
  d.SetAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
  EXPECT_FALSE(*d.queue().NeedsNotification(d.mem()));
  d.SetAvailFlags(0);
  EXPECT_TRUE(*d.queue().NeedsNotification(d.mem()));
}

TEST(QueueTest, KickSuppressionWithEventIdx) {
  FakeDriver d(8);
  d.queue().SetEventIdx(true);
  d.WriteChain(0, {{8, false}});
  ASSERT_TRUE(d.queue().SetAvailEvent(d.mem(), 0x1234).ok());
  EXPECT_EQ(d.AvailEvent(), 0x1234);

  d.Publish(0);
  d.Publish(0);
  ASSERT_TRUE(d.PopChain().has_value());
  // One chain still pending: enabling reports it; avail_event = next avail index.
  absl::StatusOr<bool> more = d.queue().EnableNotification(d.mem());
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_TRUE(*more);
  EXPECT_EQ(d.AvailEvent(), 1);
  ASSERT_TRUE(d.PopChain().has_value());
  more = d.queue().EnableNotification(d.mem());
  ASSERT_TRUE(more.ok());
  EXPECT_FALSE(*more);
  EXPECT_EQ(d.AvailEvent(), 2);
  // Disabling leaves avail_event (and the used flags) alone.
  ASSERT_TRUE(d.queue().DisableNotification(d.mem()).ok());
  EXPECT_EQ(d.AvailEvent(), 2);
  EXPECT_EQ(d.UsedFlags(), 0);
}

TEST(QueueTest, KickSuppressionWithoutEventIdx) {
  FakeDriver d(8);
  ASSERT_TRUE(d.queue().DisableNotification(d.mem()).ok());
  EXPECT_EQ(d.UsedFlags(), VRING_USED_F_NO_NOTIFY);
  absl::StatusOr<bool> more = d.queue().EnableNotification(d.mem());
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_FALSE(*more);
  EXPECT_EQ(d.UsedFlags(), 0);
  d.WriteChain(0, {{8, false}});
  d.Publish(0);
  EXPECT_TRUE(*d.queue().EnableNotification(d.mem()));
}

TEST(QueueTest, ResetClearsState) {
  FakeDriver d(8, 64);
  d.queue().SetEventIdx(true);
  d.WriteChain(0, {{8, true}});
  d.Publish(0);
  ASSERT_TRUE(d.PopChain().has_value());
  ASSERT_TRUE(d.queue().AddUsed(d.mem(), 0, 8).ok());
  ASSERT_EQ(d.queue().next_avail(), 1);
  ASSERT_EQ(d.queue().next_used(), 1);

  d.queue().Reset();
  EXPECT_EQ(d.queue().max_size(), 64);
  EXPECT_EQ(d.queue().size(), 64);
  EXPECT_FALSE(d.queue().ready());
  EXPECT_FALSE(d.queue().event_idx());
  EXPECT_EQ(d.queue().desc_table(), 0u);
  EXPECT_EQ(d.queue().avail_ring(), 0u);
  EXPECT_EQ(d.queue().used_ring(), 0u);
  EXPECT_EQ(d.queue().next_avail(), 0);
  EXPECT_EQ(d.queue().next_used(), 0);
  EXPECT_EQ(d.queue().Pop(d.mem()).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(QueueTest, AddUsedBatchPublishesAllElementsWithOneIdxStore) {
  FakeDriver d(4);
  d.queue().AddUsed(d.mem(), 0, 1).IgnoreError();
  d.queue().AddUsed(d.mem(), 1, 1).IgnoreError();
  d.queue().AddUsed(d.mem(), 2, 1).IgnoreError();  // used idx 3: the batch wraps the ring
  const UsedElement batch[] = {{3, 100}, {1, 200}, {2, 0}};
  ASSERT_TRUE(d.queue().AddUsedBatch(d.mem(), batch).ok());
  EXPECT_EQ(d.UsedIdx(), 6);
  EXPECT_EQ(d.queue().next_used(), 6);
  EXPECT_EQ(d.UsedElem(3).id, 3u);
  EXPECT_EQ(d.UsedElem(3).len, 100u);
  EXPECT_EQ(d.UsedElem(0).id, 1u);
  EXPECT_EQ(d.UsedElem(0).len, 200u);
  EXPECT_EQ(d.UsedElem(1).id, 2u);

  // A bad head anywhere in the batch: nothing is written.
  const UsedElement bad[] = {{0, 1}, {4, 1}};
  EXPECT_THAT(Msg(d.queue().AddUsedBatch(d.mem(), bad)), HasSubstr("out of range"));
  const UsedElement too_many[] = {{0, 1}, {1, 1}, {2, 1}, {3, 1}, {0, 1}};
  EXPECT_FALSE(d.queue().AddUsedBatch(d.mem(), too_many).ok());
  EXPECT_EQ(d.UsedIdx(), 6);
  EXPECT_EQ(d.UsedElem(2).id, 2u);  // untouched since the first AddUsed calls
}

}  // namespace
}  // namespace vessel::virtio

namespace vessel::virtio {
namespace {

TEST(QueueSnapshotTest, SaveRestoreRoundTripContinuesWhereItStopped) {
  testing::FakeDriver d(8, 64);
  d.queue().SetEventIdx(true);
  d.WriteChain(0, {{8, true}});
  d.Publish(0);
  d.WriteChain(1, {{8, true}});
  d.Publish(1);
  ASSERT_TRUE(d.PopChain().has_value());
  ASSERT_TRUE(d.queue().AddUsed(d.mem(), 0, 8).ok());
  ASSERT_TRUE(d.queue().NeedsNotification(d.mem()).ok());
  const snapshot::v1::QueueState state = d.queue().SaveState();
  EXPECT_EQ(state.max_size(), 64u);
  EXPECT_EQ(state.size(), 8u);
  EXPECT_EQ(state.desc_table(), testing::FakeDriver::kDescTable);
  EXPECT_TRUE(state.ready());
  EXPECT_TRUE(state.event_idx());
  EXPECT_EQ(state.next_avail(), 1u);
  EXPECT_EQ(state.next_used(), 1u);
  EXPECT_EQ(state.signalled_used(), 1u);

  absl::StatusOr<Queue> q = Queue::Create(64);
  ASSERT_TRUE(q.ok());
  ASSERT_TRUE(q->RestoreState(state).ok());
  EXPECT_EQ(q->SaveState().SerializeAsString(), state.SerializeAsString());
  // The restored queue pops the second chain and publishes used entry 1.
  absl::StatusOr<std::optional<DescriptorChain>> chain = q->Pop(d.mem());
  ASSERT_TRUE(chain.ok() && chain->has_value());
  EXPECT_EQ((*chain)->head_index(), 1);
  ASSERT_TRUE(q->AddUsed(d.mem(), 1, 4).ok());
  EXPECT_EQ(d.UsedIdx(), 2);
  EXPECT_EQ(d.UsedElem(1).id, 1u);
}

TEST(QueueSnapshotTest, RestoreRefusesMismatchesAndKeepsTheQueue) {
  testing::FakeDriver d(8, 64);
  const snapshot::v1::QueueState good = d.queue().SaveState();
  absl::StatusOr<Queue> q = Queue::Create(64);
  ASSERT_TRUE(q.ok());
  snapshot::v1::QueueState bad = good;
  bad.set_max_size(128);
  absl::Status s = q->RestoreState(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(testing::Msg(s), ::testing::HasSubstr("max_size 128"));
  for (uint32_t size : {0u, 12u, 128u, 70000u}) {
    bad = good;
    bad.set_size(size);
    s = q->RestoreState(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << size;
    EXPECT_THAT(testing::Msg(s), ::testing::HasSubstr("size")) << size;
  }
  bad = good;
  bad.set_next_used(0x10000);
  EXPECT_THAT(testing::Msg(q->RestoreState(bad)), ::testing::HasSubstr("next_used"));
  EXPECT_FALSE(q->ready());
  EXPECT_EQ(q->size(), 64);
}

TEST(QueueSnapshotTest, UndoPopGivesChainsBack) {
  testing::FakeDriver d(8);
  d.WriteChain(0, {{8, true}});
  d.Publish(0);
  d.WriteChain(1, {{8, true}});
  d.Publish(1);
  ASSERT_TRUE(d.PopChain().has_value());
  ASSERT_TRUE(d.PopChain().has_value());
  d.queue().UndoPop(2);
  EXPECT_EQ(d.queue().next_avail(), 0);
  std::optional<DescriptorChain> again = d.PopChain();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->head_index(), 0);
}

}  // namespace
}  // namespace vessel::virtio
