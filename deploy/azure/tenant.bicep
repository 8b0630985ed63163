// Per-tenant resources of skycrawl on Azure, deployed by adapters/azure/provisioner.py
// (ArmProvisioner) as the deployment "skycrawl-tenant-<tenant>-<hash>" in the shared
// resource group. The provisioner deploys tenant.json, the compiled form of this file:
// after editing, run `az bicep build --file tenant.bicep --outfile tenant.json` (the test
// tests/integration/azure/test_templates.py checks that the two declare the same
// parameters, resources and outputs).
//
// Everything lives in the shared storage account (and the shared Service Bus namespace): the
// tenant's results container and dispatch topic (with its dead-letter queue), and with
// dedicated tenant data its own table. An empty table, container, topic or queue costs nothing.
//
// The tenant's identity: a user-assigned managed identity that the tenant's container groups
// run with (ContainerInstancesRuntime), holding only
//   * Service Bus Data Owner on the tenant's topic (its containers create and delete their own
//     filtered subscriptions there, and receive from them), Sender on its dead-letter queue;
//   * Service Bus Data Sender on the inbox queue (reports to the conductor; no receive);
//     with the Storage-queue bus instead, Storage Queue Data Contributor on the account;
//   * the blob role on the shared results container, with a condition: blobs whose path starts
//     with tenants/<tenant>/, and listings whose prefix does.
// Nothing on another tenant's entities, the namespace, the storage account, the
// function-releases container (the code package) or the state table. A user-assigned
// identity and its role assignments cost nothing.

@description('The skycrawl tenant id (recorded in the container metadata).')
param tenantId string

@description('The shared storage account of the deployment.')
param storageAccountName string

@description('The tenant\'s own table for its crawl and usage records (SKYCRAWL_TENANT_DATA=dedicated); alphanumeric, 3-63 characters. Empty (pooled tenant data): no table, the tenant\'s records live in the shared state table.')
param tableName string = ''

@description('The tenant\'s blob container (its results).')
param containerName string

@description('The tenant\'s dispatch topic (core.layout.tenant_topic: SKYCRAWL_DISPATCH_TOPIC, a dash, the tenant).')
param dispatchTopicName string

@description('The Service Bus namespace of the deployment\'s bus; empty: the Storage-queue bus (the topic is then its dead-letter queue <topic>-poison, and one queue per subscription).')
param serviceBusNamespaceName string = ''

@description('Name of the tenant\'s managed identity (its containers run as it).')
param identityName string

@description('Region of the tenant\'s managed identity.')
param location string = resourceGroup().location

@description('The conductor\'s inbox queue in the namespace (the tenant\'s containers may send to it); empty: no grant.')
param inboxQueueName string = ''

@description('The shared results container; the tenant\'s identity may use only blobs under blobPrefix in it.')
param resultsContainerName string

@description('The tenant\'s blob prefix in the results container (core.layout.tenant_prefix, after SKYCRAWL_AZURE_BLOB_PREFIX).')
param blobPrefix string

@description('Role definition (GUID) granted on the results container under the path condition; empty: Storage Blob Data Contributor. main.bicep defines one with the data actions only.')
param blobRoleDefinitionId string = ''

var useServiceBus = !empty(serviceBusNamespaceName)
var grantInbox = useServiceBus && !empty(inboxQueueName)
var serviceBusDataOwner = '090c5cfd-751d-490a-894a-3ce6f1109419'
var serviceBusDataSender = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var blobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var queueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var blobRole = empty(blobRoleDefinitionId) ? blobDataContributor : blobRoleDefinitionId
var blobActions = 'Microsoft.Storage/storageAccounts/blobServices/containers/blobs'
var blobCondition = format('((!(ActionMatches{{\'{0}/read\'}} AND NOT SubOperationMatches{{\'Blob.List\'}}) AND !(ActionMatches{{\'{0}/write\'}}) AND !(ActionMatches{{\'{0}/delete\'}}) AND !(ActionMatches{{\'{0}/add/action\'}}) AND !(ActionMatches{{\'{0}/move/action\'}})) OR (@Resource[{0}:path] StringStartsWith \'{1}\')) AND ((!(ActionMatches{{\'{0}/read\'}} AND SubOperationMatches{{\'Blob.List\'}})) OR (@Request[{0}:prefix] StringStartsWith \'{1}\'))', blobActions, blobPrefix)

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: {
    'skycrawl-tenant': tenantId
  }
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource table 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = if (!empty(tableName)) {
  parent: tableService
  name: tableName
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
    metadata: {
      skycrawltenant: tenantId
    }
  }
}

resource storagePoison 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = if (!useServiceBus) {
  parent: queueService
  name: '${dispatchTopicName}-poison'
  properties: {
    metadata: {
      skycrawltenant: tenantId
    }
  }
}

resource namespace 'Microsoft.ServiceBus/namespaces@2021-11-01' existing = if (useServiceBus) {
  name: serviceBusNamespaceName
}

resource dispatchTopic 'Microsoft.ServiceBus/namespaces/topics@2021-11-01' = if (useServiceBus) {
  parent: namespace
  name: dispatchTopicName
}

resource dispatchDeadLetters 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = if (useServiceBus) {
  parent: namespace
  name: '${dispatchTopicName}-dlq'
  properties: {
    lockDuration: 'PT1M'
  }
}

resource results 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: resultsContainerName
}

resource inbox 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' existing = if (grantInbox) {
  parent: namespace
  name: inboxQueueName
}

resource engineTopicRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useServiceBus) {
  name: guid(tenantId, dispatchTopicName, serviceBusDataOwner)
  scope: dispatchTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource engineDeadLetterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useServiceBus) {
  name: guid(tenantId, dispatchTopicName, serviceBusDataSender)
  scope: dispatchDeadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSender)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource engineInboxRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantInbox) {
  name: guid(tenantId, inboxQueueName, serviceBusDataSender)
  scope: inbox
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSender)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The Storage-queue bus names a subscription's queue by a hash of topic and subscription,
// so no condition can tell one tenant's queues from another's: account-wide (README).
resource engineQueueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!useServiceBus) {
  name: guid(tenantId, storageAccountName, queueDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource engineBlobRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(tenantId, resultsContainerName, blobRole)
  scope: results
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobRole)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    condition: blobCondition
    conditionVersion: '2.0'
  }
}

output tableName string = tableName
output tableId string = empty(tableName) ? '' : table.id
output containerName string = containerName
output containerId string = container.id
output dispatchTopicName string = dispatchTopicName
output dispatchTopicId string = useServiceBus ? dispatchTopic.id : ''
output dispatchDeadLetterId string = useServiceBus ? dispatchDeadLetters.id : storagePoison.id
output identityId string = identity.id
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output topicRoleId string = useServiceBus ? engineTopicRole.id : ''
output deadLetterRoleId string = useServiceBus ? engineDeadLetterRole.id : ''
output inboxRoleId string = grantInbox ? engineInboxRole.id : ''
output queueRoleId string = useServiceBus ? '' : engineQueueRole.id
output blobRoleId string = engineBlobRole.id
